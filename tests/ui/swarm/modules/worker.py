"""A worker: waits a little, logs, reports an accuracy that grows with the iteration;
the last node (by id) fails in iteration 1."""

import os
import time

from shoal.runtime import Task


class Worker(Task):
    def run(self) -> None:
        it = self.world.iteration
        time.sleep(float(os.environ.get("SHOAL_UI_TEST_DELAY", "0.4")))
        self.logger.info(f"worker on {self.world.node_id} starts iteration {it}")
        if it == 1 and self.world.node_id.endswith(("b", "1")):
            raise RuntimeError("the disk of this node is full (a test failure)")
        spread = int(self.world.node_id[-1], 36) % 5 * 0.012  # nodes differ a little
        acc = 0.5 + 0.07 * it - 0.004 * it * it + spread
        self.logger.metric("accuracy", acc)
        self.world.results.add("acc", acc)


def main() -> None:
    Worker().run()
