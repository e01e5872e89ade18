"""Add one partial sum per worker into the global "total".

Each worker runs on every node, so ``select_all`` (every record with its alias and node)
is the call; each worker's results must agree across nodes, and are counted once. Writes
"total" and "workers" (the worker aliases seen), then ends the swarm: one pass.
"""

from __future__ import annotations

from shoal.runtime import Task


class Aggregator(Task):
    def run(self) -> None:
        by_worker: dict[str, set[int]] = {}
        for record in self.world.results.select_all("partial"):
            by_worker.setdefault(record.alias, set()).add(record.value)
        disagree = sorted(alias for alias, values in by_worker.items() if len(values) != 1)
        if disagree:
            raise RuntimeError(f"workers {disagree} gave different sums on different nodes")
        self.world.globals["total"] = sum(values.pop() for values in by_worker.values())
        self.world.globals["workers"] = sorted(by_worker)
        self.world.stop_swarm()


def main() -> None:
    Aggregator().run()
