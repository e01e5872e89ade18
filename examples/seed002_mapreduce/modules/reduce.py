"""Reduce step: add up the counts of every mapper on every node.

Every mapper runs on every node (the seed's default ``method="all"``), so one node holds
ten results of one tag: ``select_all`` returns each record with its alias and node
(``select`` would refuse, naming ``select_all``). Writes the global "counts"
({word: count}) and "mappers" (how many (mapper, node) results were added), then ends
the swarm: the job is one pass.
"""

from __future__ import annotations

from collections import Counter

from shoal.runtime import Task


class Reduce(Task):
    def run(self) -> None:
        total: Counter[str] = Counter()
        records = self.world.results.select_all("counts")
        for record in records:
            total.update(record.value)
        self.world.globals["counts"] = dict(total)
        self.world.globals["mappers"] = sorted({r.alias for r in records})
        self.logger.info(f"{len(records)} results, {sum(total.values())} words")
        self.world.stop_swarm()


def main() -> None:
    Reduce().run()
