"""Crashes, retries, timeouts, lost nodes, late and impossible reports."""

from __future__ import annotations

import pytest
from engine_harness import Harness, cancels, fedavg, finished, module, plan, runs, task, wakes

from shoal._engine import Engine, EngineError, InstanceState
from shoal._engine.messages import (
    FailureKind,
    InstanceStarted,
    InstanceSucceeded,
    NextIterScheduled,
    NodeLost,
    NodeRestarted,
    StopRequested,
    StopSwarmCalled,
    SwarmSubmitted,
)
from shoal._plan import ConditionKind, Method


def test_one_crash_among_ten_fails_the_swarm_with_its_traceback() -> None:
    h = Harness()
    nodes = [f"n{i}" for i in range(10)]
    h.join(*nodes)
    out = h.submit(fedavg())
    ids = [r.instance_id for r in runs(out)]
    for iid in ids[:5]:
        h.run_ok(iid)
    h.start(ids[5])
    out = h.fail(ids[5], "worker died", "Traceback...\nZeroDivisionError", FailureKind.CRASH)
    assert [c.instance_id for c in cancels(out)] == ids[6:]
    (done,) = finished(out)
    assert done.status == "failed" and done.iterations == 1
    assert "task 'worker' failed in iteration 0" in done.reason
    assert "5 of 10 instance(s) succeeded, 1 failed for good" in done.reason
    assert "min_results=10" in done.reason and "worker died" in done.reason
    (f,) = done.failures
    assert (f.instance_id, f.node_id, f.alias, f.kind) == (ids[5], "n5", "worker", "crash")
    assert f.error == "worker died" and f.traceback.endswith("ZeroDivisionError")
    assert out.index(cancels(out)[-1]) < out.index(done)
    assert h.engine.swarm("s").failures == done.failures


def test_retry_for_any_goes_to_another_node() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg(worker=task("worker", method=Method.ANY, retries=2)))
    (first,) = runs(out)
    assert first.node_id == "n1"  # least loaded, tie broken by node id
    out = h.fail(first.instance_id)
    (second,) = runs(out)
    assert second.instance_id == "s/0/worker/0/1" and second.attempt == 1
    assert second.node_id == "n2"
    out = h.fail(second.instance_id)
    (third,) = runs(out)
    assert third.node_id == "n3" and third.attempt == 2
    (done,) = finished(h.fail(third.instance_id))
    assert done.status == "failed"
    assert [f.node_id for f in done.failures] == ["n1", "n2", "n3"]
    assert "retried as s/0/worker/0/1 on node n2" in "\n".join(h.engine.story(first.instance_id))
    assert "no retries left" in h.engine.story(third.instance_id)[-1]


def test_retry_for_any_falls_back_to_the_same_node() -> None:
    h = Harness()
    h.join("n1")
    out = h.submit(fedavg(worker=task("worker", method=Method.ANY, retries=1)))
    (first,) = runs(out)
    (second,) = runs(h.fail(first.instance_id))
    assert second.node_id == "n1" and second.attempt == 1
    (agg,) = runs(h.run_ok(second.instance_id))
    assert agg.inputs == {"worker": (second.instance_id,)}


def test_retry_for_all_stays_on_its_node() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", retries=1)))
    ids = [r.instance_id for r in runs(out)]
    (again,) = runs(h.fail(ids[1]))
    assert (again.node_id, again.instance_id) == ("n2", "s/0/worker/1/1")
    h.run_ok(ids[0])
    (agg,) = runs(h.run_ok(again.instance_id))
    assert agg.inputs == {"worker": (ids[0], again.instance_id)}
    (done,) = finished(h.run_ok(agg.instance_id))
    assert done.status == "succeeded" and len(done.failures) == 1


def test_retry_for_all_on_a_lost_node_is_final() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", retries=3)))
    ids = [r.instance_id for r in runs(out)]
    out = h.lose("n2")
    assert not runs(out)
    (done,) = finished(out)
    assert done.status == "failed"
    (f,) = done.failures
    assert (f.instance_id, f.kind, f.node_id) == (ids[1], FailureKind.LOST, "n2")
    assert "node n2 lost" in f.error
    assert "disconnected" in h.engine.story(ids[1])[-1]


def test_node_lost_mid_run_retries_elsewhere_for_any() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", method=Method.ANY, retries=1)))
    (first,) = runs(out)
    h.start(first.instance_id)
    out = h.lose(first.node_id)
    (second,) = runs(out)
    assert second.node_id == "n2" and not cancels(out)  # nothing to cancel on a lost node
    view = h.engine.instance(first.instance_id)
    assert view.state is InstanceState.FAILED and view.kind is FailureKind.LOST
    # A late report from the lost node is a benign race.
    assert not h.succeed(first.instance_id)
    assert h.engine.story(first.instance_id)[-1].endswith(
        "late report ignored (succeeded after the engine ended it)"
    )
    assert h.lose(first.node_id) == []  # losing it twice changes nothing
    assert h.reject(NodeLost("ghost", h.now)).code == "engine.unknown_node"


@pytest.mark.parametrize("method", [Method.ANY, Method.RANDOM])
def test_a_retry_avoids_nodes_that_hold_another_slot_of_the_task(method: Method) -> None:
    # Two results of one task from one node would collide in results.select().
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg(worker=task("worker", method=method, count=2, retries=2)), seed=5)
    first, second = runs(out)
    spare = ({"n1", "n2", "n3"} - {first.node_id, second.node_id}).pop()
    h.run_ok(first.instance_id)  # succeeded: its node has a result
    h.start(second.instance_id)
    (again,) = runs(h.lose(second.node_id))
    assert again.node_id == spare  # not first.node_id, although it is idle now
    # Nowhere else to go: the failed node itself if it is still eligible...
    (third,) = runs(h.fail(again.instance_id))
    assert third.node_id == spare
    (agg,) = runs(h.run_ok(third.instance_id))
    assert agg.inputs == {"worker": tuple(sorted([first.instance_id, third.instance_id]))}


def test_a_retry_shares_a_node_with_another_slot_only_as_a_last_resort() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", method=Method.ANY, count=2, retries=1)))
    first, second = runs(out)
    h.run_ok(first.instance_id)
    (again,) = runs(h.lose(second.node_id))
    assert (again.node_id, again.attempt) == (first.node_id, 1)


def test_a_restarted_node_loses_its_instances_but_all_retries_in_place() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", retries=1)))
    ids = [r.instance_id for r in runs(out)]
    h.start(ids[1])
    out = h.step(NodeRestarted("n2", h.now))
    (again,) = runs(out)
    assert (again.node_id, again.instance_id) == ("n2", "s/0/worker/1/1")
    assert not cancels(out)  # the old agent's processes died with it
    view = h.engine.instance(ids[1])
    assert view.state is InstanceState.FAILED and view.kind is FailureKind.LOST
    assert view.error == "node n2 lost: the node agent restarted"
    assert h.engine.instance(ids[0]).state is InstanceState.SCHEDULED  # other nodes: untouched
    h.run_ok(ids[0])
    (agg,) = runs(h.run_ok(again.instance_id))
    assert agg.inputs == {"worker": (ids[0], again.instance_id)}
    (done,) = finished(h.run_ok(agg.instance_id))
    assert done.status == "succeeded" and [f.kind for f in done.failures] == ["lost"]


def test_a_restarted_node_without_retries_fails_the_swarm_and_other_cases() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker")))
    (done,) = finished(h.step(NodeRestarted("n2", h.now, "agent restarted")))
    assert done.status == "failed" and done.reason.endswith("node n2 lost: agent restarted")
    assert h.step(NodeRestarted("n2", h.now)) == []  # nothing left on it
    h.lose("n1")
    assert h.step(NodeRestarted("n1", h.now)) == []  # disconnected: a no-op
    assert h.reject(NodeRestarted("ghost", h.now)).code == "engine.unknown_node"
    assert len(runs(out)) == 2


def test_node_lost_without_retries_fails_the_swarm() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg())
    ids = [r.instance_id for r in runs(out)]
    h.run_ok(ids[0])
    out = h.lose("n1")  # its instance already succeeded: nothing is lost
    assert out == []
    out = h.lose("n3")
    (done,) = finished(out)
    assert [c.instance_id for c in cancels(out)] == [ids[1]]
    assert [f.kind for f in done.failures] == [FailureKind.LOST]


def test_reconnected_node_is_used_again() -> None:
    h = Harness()
    h.join("n1", "n2")
    h.submit(fedavg(iterations=2))
    h.lose("n2")
    assert finished(h.log)[0].status == "failed"
    h.join("n2")
    out = h.submit(fedavg(), swarm_id="t")
    assert [r.node_id for r in runs(out)] == ["n1", "n2"]


def test_timeout_cancels_and_retries() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", method=Method.ANY, timeout=10.0, retries=1)))
    (first,) = runs(out)
    assert wakes(out) == [10.0]
    h.tick(3)
    h.start(first.instance_id)
    assert h.timer(9.0) == []  # not due yet
    out = h.timer(10.0)
    cancel, rerun = cancels(out)[0], runs(out)[0]
    assert out.index(cancel) < out.index(rerun)
    assert (cancel.instance_id, cancel.node_id) == (first.instance_id, "n1")
    assert "timed out after 10s" in cancel.reason
    assert rerun.node_id == "n2" and rerun.attempt == 1
    assert wakes(out) == [20.0]
    view = h.engine.instance(first.instance_id)
    assert view.state is InstanceState.FAILED and view.kind is FailureKind.TIMEOUT
    assert not h.fail(first.instance_id, "killed")  # the cancelled run reports: ignored
    out = h.timer(25.0)
    (done,) = finished(out)
    assert done.status == "failed"
    assert [f.kind for f in done.failures] == [FailureKind.TIMEOUT, FailureKind.TIMEOUT]


def test_timeout_from_started_counts_from_the_start_report_and_not_before() -> None:
    h = Harness(timeout_from="started")  # as the simulator runs it
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", method=Method.ANY, timeout=10.0, retries=1)))
    (first,) = runs(out)
    assert wakes(out) == []  # queued, not started: no deadline yet
    assert h.timer(50.0) == []
    out = h.start(first.instance_id)  # at 50
    assert wakes(out) == [60.0]
    assert h.timer(59.0) == []
    cancel, rerun = cancels(h.timer(60.0))[0], runs(h.log)[-1]
    assert "timed out after 10s" in cancel.reason and rerun.attempt == 1


def test_an_unknown_timeout_origin_is_refused() -> None:
    with pytest.raises(EngineError, match="timeout_from='queued'") as e:
        Engine(timeout_from="queued")  # type: ignore[arg-type]
    assert e.value.code == "engine.timeout_from"


def test_finished_instance_has_no_timeout() -> None:
    h = Harness()
    h.join("n1")
    out = h.submit(fedavg(worker=task("worker", timeout=10.0), agg=task("agg", 2, timeout=30.0)))
    (w,) = runs(out)
    h.tick(2)
    out = h.run_ok(w.instance_id)
    assert wakes(out) == [32.0]  # the worker's deadline at 10 is gone
    assert h.timer(10.0) == []


def test_wake_at_is_emitted_only_when_the_earliest_deadline_changes() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg(worker=task("worker", timeout=5.0)))
    assert wakes(out) == [5.0]
    ids = [r.instance_id for r in runs(out)]
    assert wakes(h.run_ok(ids[0])) == []  # the others share the deadline


def test_late_report_after_cancel_is_ignored() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg())
    ids = [r.instance_id for r in runs(out)]
    h.start(ids[1])
    out = h.fail(ids[0])  # fails the swarm, cancels ids[1]
    assert [c.instance_id for c in cancels(out)] == [ids[1]]
    for late in (h.succeed, h.fail, h.start):
        assert late(ids[1]) == []
    assert h.step(StopSwarmCalled(ids[1], h.now)) == []
    story = h.engine.story(ids[1])
    assert story[2].endswith("cancelled: swarm s failed")
    assert all("late report ignored" in line for line in story[3:])


def test_double_success_raises_with_the_story() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg())
    iid = runs(out)[0].instance_id
    h.run_ok(iid)
    err = h.reject(InstanceSucceeded(iid, h.now))
    assert err.code == "engine.impossible_move"
    message = str(err)
    assert iid in message and "in state succeeded" in message
    assert "InstanceStarted: started" in message and "InstanceSucceeded: succeeded" in message
    err = h.reject(InstanceStarted(iid, h.now))
    assert "impossible report 'started'" in str(err)
    # The rejected reports left the engine as it was: the swarm goes on.
    for other in h.live():
        h.run_ok(other)
    assert h.live()  # the aggregator


def test_report_after_own_failure_raises() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", retries=1)))
    iid = runs(out)[0].instance_id
    h.fail(iid)
    assert "in state failed" in str(h.reject(InstanceSucceeded(iid, h.now)))


def test_unknown_instance_raises() -> None:
    h = Harness()
    err = h.reject(InstanceSucceeded("s/0/x/0/0", 0.0))
    assert err.code == "engine.unknown_instance" and "s/0/x/0/0" in str(err)


def test_duplicate_swarm_raises() -> None:
    h = Harness()
    h.join("n1")
    h.submit(fedavg())
    assert h.reject(SwarmSubmitted("s", fedavg(), h.now)).code == "engine.duplicate_swarm"


def test_failed_swarm_reports_every_failed_instance_including_retried_ones() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg(worker=task("worker", retries=1)))
    ids = [r.instance_id for r in runs(out)]
    (again,) = runs(h.fail(ids[0], "first"))
    (done,) = finished(h.fail(again.instance_id, "second"))
    assert [(f.instance_id, f.error, f.attempt) for f in done.failures] == [
        (ids[0], "first", 0),
        (again.instance_id, "second", 1),
    ]


def test_result_stragglers_are_not_retried() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    worker = task("worker", condition=ConditionKind.RESULT, min_results=2, retries=3)
    out = h.submit(fedavg(worker=worker))
    ids = [r.instance_id for r in runs(out)]
    h.run_ok(ids[0])
    assert runs(h.run_ok(ids[1]), "agg")
    assert not runs(h.fail(ids[2]))
    assert "released its downstream" in h.engine.story(ids[2])[-1]


def test_late_schedule_next_iter_after_timeout_is_ignored() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(worker=task("worker", timeout=1.0, retries=1)))
    iid = runs(out)[0].instance_id
    h.timer(1.0)
    assert h.step(NextIterScheduled(iid, h.now, "worker", ("n1",))) == []
    assert "late report ignored" in h.engine.story(iid)[-1]


def test_a_source_that_cannot_be_placed_fails_the_swarm_at_once() -> None:
    h = Harness()
    h.join("n1")
    p = plan(
        [task("a", 1), task("b", 2), task("c", 3)],
        [("a", "c"), ("b", "c")],
        modules=[module(1, datasets=["x"]), module(2), module(3)],
        placement_timeout=0,
    )
    out = h.submit(p)
    (done,) = finished(out)
    assert not runs(out) and "task 'a'" in done.reason and "lacks dataset 'x'" in done.reason


def test_a_downstream_that_cannot_be_placed_fails_the_swarm_and_cancels_stragglers() -> None:
    h = Harness()
    h.join("n1", "n2")
    worker = task("worker", condition=ConditionKind.RESULT, min_results=1)
    p = plan(
        [worker, task("agg", 2, method=Method.ANY, specified=["n9"])],
        [("worker", "agg")],
        placement_timeout=0,
    )
    ids = [r.instance_id for r in runs(h.submit(p))]
    out = h.run_ok(ids[0])
    (done,) = finished(out)
    assert [c.instance_id for c in cancels(out)] == [ids[1]]
    assert "nodes n1, n2: not in specified_ids" in done.reason


def test_validate_catches_broken_bookkeeping() -> None:
    h = Harness()
    h.join("n1")
    h.submit(fedavg())
    h.engine._nodes["n1"].active.clear()  # simulate a bookkeeping slip
    with pytest.raises(EngineError) as err:
        h.engine.validate()
    assert err.value.code == "engine.invariant"


def test_unknown_event_is_rejected() -> None:
    h = Harness()
    err = h.reject(object())  # type: ignore[arg-type]
    assert err.code == "engine.unknown_event"


def test_retry_for_random_goes_to_an_untried_node() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg(worker=task("worker", method=Method.RANDOM, retries=2)), seed=3)
    tried = [runs(out)[0]]
    for _ in range(2):
        tried += runs(h.fail(tried[-1].instance_id))
    assert sorted(r.node_id for r in tried) == ["n1", "n2", "n3"]
    assert [r.attempt for r in tried] == [0, 1, 2]


def test_user_stop_while_waiting_for_a_node() -> None:
    h = Harness()
    out = h.submit(plan([task("worker")], placement_timeout=30.0))
    assert wakes(out) == [30.0]
    (done,) = finished(h.step(StopRequested("s", h.now)))
    assert done.status == "stopped" and done.failures == ()
    assert h.join("n1") == []  # nothing waits any more
    assert h.timer(30.0) == []
