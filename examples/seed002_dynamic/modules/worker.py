"""``worker_<i>``: the sum of the squares of 10*i ... 10*i+9, as the result "partial"."""

from __future__ import annotations

from shoal.runtime import Task


class Worker(Task):
    def run(self) -> None:
        i = int(self.world.alias.rsplit("_", 1)[1])
        self.world.results.add("partial", sum(k * k for k in range(10 * i, 10 * i + 10)))


def main() -> None:
    Worker().run()
