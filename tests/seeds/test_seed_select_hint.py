"""`world.results.select(tag)` that finds nothing directly upstream, while the tag is
stored elsewhere in the swarm, says where it is and how to read it: a warning in the
task's logs (issue 15, point 9b). Task code as seed 001 writes it."""

from __future__ import annotations

import shoal
from shoal import Module, Swarm, Task

WORKER = """
from shoal.runtime import Task


class Worker(Task):
    def run(self):
        self.world.results.add("model_params", [0.0, 1.0])


def main():
    Worker().run()
"""

# aggregator.py (seed 001), storing under another tag than the worker.
AGGREGATOR = """
from shoal.runtime import Task


class Aggregator(Task):
    def run(self):
        models = self.world.results.select("model_params")
        self.world.results.add("aggregate", len(models))


def main():
    Aggregator().run()
"""

# The scheduler reads the workers' tag, which is two tasks upstream.
SCHEDULER = """
from shoal.runtime import Task


class Scheduler(Task):
    def run(self):
        found = self.world.results.select("model_params")
        self.world.globals["found"] = len(found)
        self.world.globals["typo"] = len(self.world.results.select("agregate"))
        self.world.globals["nowhere"] = len(self.world.results.select("gradients"))


def main():
    Scheduler().run()
"""


class FederatedLearningSwarm(Swarm):
    def __init__(self):
        super().__init__()
        self.max_iterations = 1
        self.worker = Task(Module(WORKER, name="worker"), method="all", maximum=-1)
        self.aggregator = Task(Module(AGGREGATOR, name="aggregator"), method="any", maximum=1)
        self.scheduler = Task(Module(SCHEDULER, name="scheduler"), method="any", maximum=1)

    def execute(self):
        """Define execution flow."""
        results = self.worker()  # Parallel training
        aggregated = self.aggregator(results)  # Model aggregation
        return self.scheduler(aggregated)  # Coordination decision


def test_select_says_where_a_tag_stored_further_upstream_is() -> None:
    run = shoal.simulate(FederatedLearningSwarm(), nodes=3, seed=0)
    assert run.status == "succeeded", run.reason
    assert run.globals["found"] == 0  # still {}: the answer itself does not change
    warnings = [r.message for r in run.logs(task="scheduler", level="warning")]
    (where,) = [w for w in warnings if "'model_params'" in w]
    assert "found nothing from the direct upstream tasks ('aggregator') in iteration 0" in where
    assert "task 'worker' stored it in iteration 0" in where
    assert "world.results.select('model_params', alias='worker', iteration=0)" in where
    (typo,) = [w for w in warnings if "'agregate'" in w]
    assert "they stored only 'aggregate' (a misspelt tag?)" in typo
    (nowhere,) = [w for w in warnings if "'gradients'" in w]
    assert "they stored only 'aggregate'" in nowhere
    assert not run.logs(task="aggregator", level="warning")  # found what it asked for


def test_select_says_when_the_tag_is_in_a_task_it_may_not_read() -> None:
    class OtherBranch(Swarm):
        max_iterations = 1

        def execute(self):
            worker = Task(Module(WORKER, name="worker"), alias="worker")
            source = Task(Module("def main():\n    pass\n", name="noop"), alias="source")
            agg = Task(Module(AGGREGATOR, name="aggregator"), method="any", alias="agg")
            return [worker(), agg(source())]  # 'worker' is another branch

    run = shoal.simulate(OtherBranch(), nodes=2, seed=0)
    assert run.status == "succeeded", run.reason
    (warning,) = [r.message for r in run.logs(task="agg", level="warning")]
    assert "task 'worker' stored it in iteration 0, but 'agg' may not read it" in warning
    assert "make 'worker' an upstream task of 'agg' in execute()" in warning


def test_a_tag_stored_nowhere_by_upstream_tasks_that_stored_nothing_is_a_plain_empty_answer() -> (
    None
):
    class Nothing(Swarm):
        max_iterations = 1

        def execute(self):
            source = Task(Module("def main():\n    pass\n", name="noop"), alias="source")
            agg = Task(Module(AGGREGATOR, name="aggregator"), method="any", alias="agg")
            return agg(source())

    run = shoal.simulate(Nothing(), nodes=2, seed=0)
    assert run.status == "succeeded", run.reason
    assert list(run.results.select("aggregate", alias="agg").values()) == [0]
    assert not run.logs(level="warning")
