"""Benchmark client: one step of "training", w <- w - 0.01 * (w - k), for client k."""

from shoal.runtime import Task


class Worker(Task):
    def run(self) -> None:
        w = self.world.globals["w"]
        k = float(self.world.node_id.rsplit("-", 1)[1])  # node-00042 -> client 42
        self.world.results.add("w", w - 0.01 * (w - k))


def main() -> None:
    Worker().run()
