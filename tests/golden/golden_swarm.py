"""The swarm of the golden plan (``plan_v1.json``): every field of a version-1 plan set
at least once. ``shoal export tests/golden/golden_swarm.py`` writes that plan (but for
``source``, which holds the absolute path of this file)."""

from __future__ import annotations

import numpy as np

from shoal import Condition, Module, NetworkDriver, Swarm, Task

SCORE = """
from shoal.runtime import Task

class Score(Task):
    def run(self):
        self.world.results.add("score", 1.0)

def main():
    Score().run()
"""


class GoldenSwarm(Swarm):
    """Train on every node with data, score on a sample, aggregate on one node."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "golden"
        self.max_iterations = 3
        self.placement_timeout = 30.0
        self.set_global("weights", np.arange(4, dtype=np.float32))
        self.set_global("lr", 0.5)
        self.set_global("config", {"epochs": 2, "tags": ["a", "b"]})
        self.add_network("backend", NetworkDriver.BRIDGE)
        self.train = Task(
            Module(
                "modules/train.py",
                datasets=["digits"],
                version="1.0",
                requirements=["numpy>=1.24"],
                resources={"cpu": 2, "memory": "4Gi"},
            ),
            method="all",
            maximum=8,
            excepted_ids=["node-00009"],
            network="backend",
            condition=Condition.RESULT,
            min_results=2,
            timeout=60.0,
            retries=1,
        )
        self.score = Task(
            Module(SCORE, name="score", image="py311"),
            method="random",
            maximum=0.5,
            gpu=True,
        )
        self.aggregate = Task(
            Module("modules/aggregate"),
            method="fixed",
            specified_ids=["node-00000"],
            alias="aggregator",
        )

    def execute(self) -> Task:
        return self.aggregate([self.train(), self.score()])
