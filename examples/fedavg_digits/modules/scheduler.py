"""Scheduler: decide after every round whether training goes on.

It keeps the accuracy curve in the global "val_history" (globals, unlike local state,
do not depend on which node this single task happens to run on) and stops the swarm
when the curve has flattened or the round budget is spent.
"""

from __future__ import annotations

from shoal.runtime import Task


def plateaued(history: list[float], patience: int, min_delta: float) -> bool:
    """True if the last ``patience`` values beat the best before them by <= ``min_delta``."""
    if len(history) <= patience:
        return False
    return max(history[-patience:]) <= max(history[:-patience]) + min_delta


class Scheduler(Task):
    def run(self) -> None:
        settings = self.world.globals
        (accuracy,) = self.world.results.select("val_accuracy").values()  # one aggregator

        history = [*settings.get("val_history", []), accuracy]
        settings["val_history"] = history
        self.logger.metric("val_accuracy", accuracy)

        rounds = self.world.iteration + 1
        if rounds >= settings["max_rounds"]:
            self.logger.info(f"stopping: reached {rounds} rounds")
            self.world.stop_swarm()
        elif plateaued(history, settings["patience"], settings["min_delta"]):
            self.logger.info(
                f"stopping after {rounds} rounds: validation accuracy plateaued "
                f"at {max(history):.4f}"
            )
            self.world.stop_swarm()


def main() -> None:
    Scheduler().run()
