"""A failed run is loud: ``shoal.simulate`` raises ``SwarmFailedError`` with every
failure's node and traceback, unless ``raise_on_failure=False`` (issue 16, point 2)."""

from __future__ import annotations

import pickle

import pytest
from helpers import task_module

import shoal
from shoal import Swarm, Task

RAISES_ON_TWO_NODES = """
self.logger.info("started on " + self.world.node_id)
if self.world.node_id in ("node-00001", "node-00002"):
    raise ValueError("bad shard on " + self.world.node_id)
"""


class Two(Swarm):
    max_iterations = 1

    def __init__(self) -> None:
        self.set_global("weights", "initial")
        # min_results=3 of 4: the swarm fails at the second failure, so it has two.
        module = task_module(RAISES_ON_TWO_NODES, "Worker")
        self.worker = Task(module, alias="worker", min_results=3)

    def execute(self) -> Task:
        return self.worker()


def test_simulate_raises_with_every_failure_node_and_traceback() -> None:
    with pytest.raises(shoal.SwarmFailedError) as e:
        shoal.simulate(Two(), nodes=4, workers=2)
    err = e.value
    assert err.code == "swarm.failed" and isinstance(err, shoal.ShoalError)
    text = str(err)
    assert text.startswith("swarm 'Two' failed: task 'worker' failed in iteration 0")
    nodes = sorted(f.node_id for f in err.failures)
    assert nodes == ["node-00001", "node-00002"]
    for node in nodes:
        assert f"task 'worker' on node {node}" in text
        assert f"ValueError: bad shard on {node}" in text
    assert text.count("Traceback (most recent call last)") == 2
    assert 'raise ValueError("bad shard on " + self.world.node_id)' in text
    assert "raise_on_failure=False" in text
    # The failed run rides along: its logs and stories are there to read.
    run = err.result
    assert isinstance(run, shoal.SimulationRun) and run.status == "failed"
    assert {r.node_id for r in run.logs()} >= {"node-00001", "node-00002"}
    # Picklable like every shoal error (the run stays behind).
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == text and back.failures == err.failures and back.result is None


def test_raise_on_failure_false_returns_the_failed_run() -> None:
    run = shoal.simulate(Two(), nodes=4, workers=2, raise_on_failure=False)
    assert run.status == "failed" and len(run.failures) == 2
    assert run.globals["weights"] == "initial"  # what a user who did not look would keep
    with pytest.raises(shoal.SwarmFailedError):
        run.raise_for_status()


def test_a_long_list_of_failures_shows_the_first_tracebacks_and_counts_the_rest() -> None:
    failure = shoal.FailureRecord("s/0/t/0/0", "t", "n1", 0, 0, "error", "boom", "Traceback\n  x")
    err = shoal.SwarmFailedError("s", "it broke", [failure] * 50)
    text = str(err)
    assert text.count("Traceback") == shoal.SwarmFailedError.SHOWN_TRACEBACKS
    assert text.count("- task 't' on node n1") == shoal.SwarmFailedError.SHOWN_LINES
    assert "... and 30 more (every one is in .failures)" in text
    assert len(err.failures) == 50
