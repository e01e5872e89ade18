"""Reduce step: add up the mappers' word counts.

Writes the total as the global "counts" ({word: count}) and publishes the ten most
frequent words as the result "top" ([[word, count], ...], most frequent first, ties
in alphabetical order).
"""

from __future__ import annotations

from collections import Counter

from shoal.runtime import Task


class Reducer(Task):
    def run(self) -> None:
        total: Counter[str] = Counter()
        mappers = 0
        for _node_id, counts in self.world.results.stream("counts"):
            total.update(counts)
            mappers += 1
        self.world.globals["counts"] = dict(total)
        top = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:10]
        self.world.results.add("top", [[word, n] for word, n in top])
        self.logger.info(
            f"merged {mappers} mappers: {len(total)} distinct words, {sum(total.values())} in all"
        )


def main() -> None:
    Reducer().run()
