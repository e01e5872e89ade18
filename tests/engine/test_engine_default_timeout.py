"""Every task has a finite timeout: ``timeout=None`` means the run's default task
timeout (DESIGN §3 Failure), decided by the engine and carried by ``SwarmSubmitted``."""

from __future__ import annotations

import pytest
from engine_harness import Harness, cancels, fedavg, finished, runs, task, wakes

from shoal._engine import InstanceState
from shoal._engine.messages import FailureKind, SwarmSubmitted
from shoal._engine.timers import DEFAULT_TASK_TIMEOUT_S
from shoal._plan import Method


def test_a_task_without_timeout_fails_at_the_default_naming_its_node_and_task() -> None:
    h = Harness()
    h.join("n1")
    out = h.submit(fedavg())  # worker and agg both declared with timeout=None
    (worker,) = runs(out, "worker")
    assert worker.timeout_s == DEFAULT_TASK_TIMEOUT_S < float("inf")
    assert wakes(out) == [DEFAULT_TASK_TIMEOUT_S]
    h.start(worker.instance_id)  # and then never returns
    assert h.timer(DEFAULT_TASK_TIMEOUT_S - 1) == []
    out = h.timer(DEFAULT_TASK_TIMEOUT_S)
    (cancel,) = cancels(out)
    (done,) = finished(out)
    assert done.status == "failed"
    (failure,) = done.failures
    assert failure.kind is FailureKind.TIMEOUT and failure.node_id == "n1"
    assert f"timed out after {DEFAULT_TASK_TIMEOUT_S:g}s" in failure.error
    assert "default task timeout" in failure.error
    assert "task 'worker' on node n1" in failure.error and "--task-timeout" in failure.error
    assert "task 'worker' on node n1" in done.reason
    assert cancel.instance_id == worker.instance_id


def test_the_run_default_applies_to_tasks_without_timeout_and_a_task_timeout_wins() -> None:
    h = Harness()
    h.join("n1")
    p = fedavg(agg=task("agg", 2, method=Method.ANY, timeout=50.0))
    out = h.step(SwarmSubmitted("s", p, h.now, 0, task_timeout_s=5.0))
    (worker,) = runs(out, "worker")
    assert worker.timeout_s == 5.0 and wakes(out) == [5.0]
    assert h.engine.instance(worker.instance_id).timeout_s == 5.0
    out = h.run_ok(worker.instance_id)
    (agg,) = runs(out, "agg")
    assert agg.timeout_s == 50.0  # its own timeout, not the run's default
    (failure,) = finished(h.timer(h.now + 50.0))[0].failures
    assert failure.error == "timed out after 50s"  # the user's own timeout: no advice


def test_timeout_from_started_uses_the_default_from_the_start_report() -> None:
    h = Harness(timeout_from="started")
    h.join("n1")
    out = h.step(SwarmSubmitted("s", fedavg(), h.now, 0, task_timeout_s=2.0))
    (worker,) = runs(out, "worker")
    assert wakes(out) == []  # waiting for a worker is not running
    h.tick(100)
    assert wakes(h.start(worker.instance_id)) == [102.0]
    h.timer(102.0)
    view = h.engine.instance(worker.instance_id)
    assert view.state is InstanceState.FAILED and view.kind is FailureKind.TIMEOUT


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), True])
def test_a_bad_default_task_timeout_is_refused_before_anything_changes(bad: float) -> None:
    h = Harness()
    h.join("n1")
    err = h.reject(SwarmSubmitted("s", fedavg(), h.now, 0, task_timeout_s=bad))
    assert err.code == "engine.task_timeout" and "seconds > 0" in str(err)
    assert h.engine.swarm_ids() == []
