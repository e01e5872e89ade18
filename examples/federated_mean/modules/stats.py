"""Per-node statistics: how many values and their sum, for every column.

Only these aggregates leave the node, never the rows themselves.
"""

from __future__ import annotations

from shoal.runtime import Task


class Stats(Task):
    def run(self) -> None:
        frame = self.local.get_dataset("cancer")  # a .csv: a pandas DataFrame
        numeric = frame.select_dtypes("number")
        # Missing values are left out of both the count and the sum.
        self.world.results.add("count", {col: int(n) for col, n in numeric.count().items()})
        self.world.results.add("sum", {col: float(s) for col, s in numeric.sum().items()})
        self.logger.info(f"{len(frame)} rows, {numeric.shape[1]} numeric columns")


def main() -> None:
    Stats().run()
