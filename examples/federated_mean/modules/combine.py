"""Combine the nodes' statistics into the global count and mean of every column.

    count[c] = sum over nodes of count_i[c]
    mean[c]  = (sum over nodes of sum_i[c]) / count[c]

Writes the globals "count" and "mean" ({column: value}).
"""

from __future__ import annotations

from collections import defaultdict

from shoal.runtime import Task


class Combine(Task):
    def run(self) -> None:
        results = self.world.results
        count: defaultdict[str, int] = defaultdict(int)
        total: defaultdict[str, float] = defaultdict(float)
        for _node_id, counts in results.stream("count"):
            for col, n in counts.items():
                count[col] += n
        for _node_id, sums in results.stream("sum"):
            for col, s in sums.items():
                total[col] += s
        mean = {col: total[col] / n if n else float("nan") for col, n in count.items()}
        self.world.globals["count"] = dict(count)
        self.world.globals["mean"] = mean
        nodes = len(results.select("count"))
        self.logger.info(f"combined {nodes} nodes: {len(mean)} columns")


def main() -> None:
    Combine().run()
