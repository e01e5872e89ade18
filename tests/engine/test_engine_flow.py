"""Iterations, conditions, stop, max_iterations, views and stories."""

from __future__ import annotations

import pytest
from engine_harness import (
    Harness,
    cancels,
    fedavg,
    finished,
    iterations,
    plan,
    runs,
    task,
)

from shoal._engine import EngineError, InstanceState
from shoal._engine.messages import (
    IterationStarted,
    NextIterScheduled,
    RunInstance,
    StopRequested,
    StopSwarmCalled,
)
from shoal._engine.timers import DEFAULT_TASK_TIMEOUT_S
from shoal._plan import ConditionKind, Method


def test_fedavg_one_iteration() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg())
    assert isinstance(out[0], IterationStarted) and out[0].iteration == 0
    workers = runs(out, "worker")
    assert [r.node_id for r in workers] == ["n1", "n2", "n3"]
    assert [r.instance_id for r in workers] == [f"s/0/worker/{i}/0" for i in range(3)]
    # timeout=None: the run's default task timeout, which is finite (DESIGN §3 Failure).
    assert all(r.inputs == {} and r.attempt == 0 for r in workers)
    assert all(r.timeout_s == DEFAULT_TASK_TIMEOUT_S for r in workers)
    for r in workers[:2]:
        assert not runs(h.run_ok(r.instance_id))
    out = h.run_ok(workers[2].instance_id)
    (agg,) = runs(out)
    assert agg.alias == "agg" and agg.iteration == 0
    assert agg.inputs == {"worker": tuple(r.instance_id for r in workers)}
    out = h.run_ok(agg.instance_id)
    (done,) = finished(out)
    assert (done.status, done.iterations, done.failures) == ("succeeded", 1, ())
    assert done.reason == "max_iterations reached (1)"
    view = h.engine.swarm("s")
    assert (view.status, view.iteration, view.failures) == ("succeeded", 0, ())


def test_iterations_follow_each_other_until_max_iterations() -> None:
    h = Harness()
    h.join("n1", "n2")
    h.submit(fedavg(iterations=3))
    h.complete_all()
    assert iterations(h.log) == [0, 1, 2]
    (done,) = finished(h.log)
    assert done.iterations == 3 and "max_iterations reached" in done.reason
    assert len(runs(h.log, "worker")) == 6 and len(runs(h.log, "agg")) == 3


def test_instance_view_and_story() -> None:
    h = Harness()
    h.join("n1")
    h.submit(fedavg())
    h.tick()
    h.start("s/0/worker/0/0")
    view = h.engine.instance("s/0/worker/0/0")
    assert (view.swarm_id, view.alias, view.node_id, view.iteration, view.slot) == (
        "s",
        "worker",
        "n1",
        0,
        0,
    )
    assert view.state is InstanceState.RUNNING and view.attempt == 0 and view.inputs == {}
    h.tick()
    h.succeed("s/0/worker/0/0")
    story = h.engine.story("s/0/worker/0/0")
    assert story == [
        "t=0 #2 SwarmSubmitted: scheduled on node n1 (slot 0, attempt 0)",
        "t=1 #3 InstanceStarted: started",
        "t=2 #4 InstanceSucceeded: succeeded",
    ]
    with pytest.raises(EngineError) as err:
        h.engine.story("nope")
    assert err.value.code == "engine.unknown_instance"
    with pytest.raises(EngineError):
        h.engine.swarm("nope")


def test_result_condition_lets_downstream_start_with_stragglers() -> None:
    h = Harness()
    nodes = [f"n{i:02d}" for i in range(10)]
    h.join(*nodes)
    worker = task("worker", condition=ConditionKind.RESULT, min_results=8)
    out = h.submit(fedavg(iterations=2, worker=worker))
    workers = [r.instance_id for r in runs(out)]
    for iid in workers[:7]:
        assert not runs(h.run_ok(iid))
    h.start(workers[8])
    out = h.run_ok(workers[7])
    (agg,) = runs(out, "agg")
    assert agg.inputs == {"worker": tuple(workers[:8])}
    straggler_a, straggler_b = workers[8], workers[9]
    assert h.engine.instance(straggler_a).state is InstanceState.RUNNING
    # A straggler's result is recorded but not handed to the aggregator that started.
    assert not h.succeed(straggler_a)
    assert h.engine.instance(straggler_a).state is InstanceState.SUCCEEDED
    # The sink ends the iteration while the other straggler still runs.
    out = h.run_ok(agg.instance_id)
    assert iterations(out) == [1]
    assert len(runs(out, "worker")) == 10
    assert h.engine.instance(straggler_b).state is InstanceState.SCHEDULED
    # A failing straggler is not retried and does not fail a task that has its results.
    assert not runs(h.fail(straggler_b))
    # Finishing the swarm cancels iteration 1's stragglers.
    workers1 = [r.instance_id for r in runs(out, "worker")]
    for iid in workers1[:8]:
        h.run_ok(iid)
    (agg1,) = [r for r in runs(h.log, "agg") if r.iteration == 1]
    out = h.run_ok(agg1.instance_id)
    (done,) = finished(out)
    assert done.status == "succeeded"
    assert {c.instance_id for c in cancels(out)} == set(workers1[8:])
    assert all(h.engine.instance(i).state is InstanceState.CANCELLED for i in workers1[8:])
    assert [f.instance_id for f in done.failures] == [straggler_b]


def test_finished_condition_waits_for_every_instance() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    worker = task("worker", min_results=2)
    out = h.submit(fedavg(worker=worker))
    ids = [r.instance_id for r in runs(out)]
    h.run_ok(ids[0])
    assert not runs(h.run_ok(ids[1]))  # min_results reached, but FINISHED waits for all
    out = h.fail(ids[2])  # tolerated: 2 successes >= min_results
    (agg,) = runs(out)
    assert agg.inputs == {"worker": (ids[0], ids[1])}
    (done,) = finished(h.run_ok(agg.instance_id))
    assert done.status == "succeeded" and [f.instance_id for f in done.failures] == [ids[2]]


def test_fan_in_and_fan_out() -> None:
    h = Harness()
    h.join("n1", "n2")
    p = plan(
        [task("a"), task("b", method=Method.ANY), task("c", method=Method.ANY), task("d")],
        [("a", "c"), ("b", "c"), ("a", "d")],
    )
    out = h.submit(p)
    assert sorted({r.alias for r in runs(out)}) == ["a", "b"]
    a_ids = [r.instance_id for r in runs(out, "a")]
    (b,) = [r.instance_id for r in runs(out, "b")]
    h.run_ok(a_ids[0])
    out = h.run_ok(a_ids[1])
    assert [r.alias for r in runs(out)] == ["d", "d"]  # c still waits for b
    assert all(r.inputs == {"a": tuple(a_ids)} for r in runs(out))
    (c,) = runs(h.run_ok(b))
    assert c.inputs == {"a": tuple(a_ids), "b": (b,)}
    h.complete_all()
    assert finished(h.log)[0].status == "succeeded"


def test_fan_in_waits_for_every_upstream() -> None:
    h = Harness()
    h.join("n1")
    p = plan([task("a"), task("b"), task("c")], [("a", "c"), ("b", "c")])
    out = h.submit(p)
    a, b = (r.instance_id for r in runs(out))
    assert not runs(h.run_ok(a))
    (c,) = runs(h.run_ok(b))
    assert c.inputs == {"a": (a,), "b": (b,)}


def test_cycle_fails_the_swarm_at_submission() -> None:
    h = Harness()
    h.join("n1")
    p = plan([task("a"), task("b"), task("c")], [("a", "b"), ("b", "a")], sinks=["b"])
    (done,) = finished(h.submit(p))
    assert done.status == "failed" and "cycle" in done.reason and "'a'" in done.reason


def test_stop_swarm_ends_after_the_current_iteration() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(iterations=None))
    (w0, w1) = (r.instance_id for r in runs(out))
    h.start(w0)
    assert not h.step(StopSwarmCalled(w0, h.now))
    h.succeed(w0)
    out = h.run_ok(w1)
    (agg,) = runs(out)
    (done,) = finished(h.run_ok(agg.instance_id))
    assert done.status == "succeeded"
    assert done.reason == "stopped by task worker on node n1 in iteration 0"
    assert iterations(h.log) == [0]


def test_without_stop_or_limit_the_swarm_keeps_iterating() -> None:
    h = Harness()
    h.join("n1")
    h.submit(fedavg(iterations=None))
    for _ in range(5):
        for iid in h.live():
            h.run_ok(iid)
    assert iterations(h.log) == [0, 1, 2]  # 5 rounds of "finish what runs": 2 per iteration
    assert not finished(h.log)


def test_user_stop_cancels_everything() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg())
    ids = [r.instance_id for r in runs(out)]
    h.run_ok(ids[0])
    h.start(ids[1])
    out = h.step(StopRequested("s", h.now, "user pressed stop"))
    assert [c.instance_id for c in cancels(out)] == ids[1:]
    (done,) = finished(out)
    assert (done.status, done.reason) == ("stopped", "user pressed stop")
    assert h.engine.swarm("s").status == "stopped"
    assert not h.step(StopRequested("s", h.now))  # stopping again is a no-op
    assert h.reject(StopRequested("other", h.now)).code == "engine.unknown_swarm"


def test_schedule_next_iter_narrows_only_the_next_iteration() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = h.submit(fedavg(iterations=3))
    ids = [r.instance_id for r in runs(out)]
    h.start(ids[0])
    assert not h.step(NextIterScheduled(ids[0], h.now, "worker", ("n2", "n3")))
    h.succeed(ids[0])
    for iid in ids[1:]:
        h.run_ok(iid)
    (agg,) = runs(h.log, "agg")
    out = h.run_ok(agg.instance_id)
    assert [r.node_id for r in runs(out, "worker")] == ["n2", "n3"]
    for r in runs(out, "worker"):
        h.run_ok(r.instance_id)
    out = h.run_ok(runs(h.log, "agg")[-1].instance_id)
    assert [r.node_id for r in runs(out, "worker")] == ["n1", "n2", "n3"]


def test_schedule_next_iter_too_late_or_unknown_alias_is_recorded() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(
        fedavg(iterations=2, worker=task("worker", condition=ConditionKind.RESULT, min_results=1))
    )
    w0, w1 = (r.instance_id for r in runs(out))
    h.run_ok(w0)
    (agg,) = runs(h.log, "agg")
    h.run_ok(agg.instance_id)  # iteration 1 placed; w1 is a straggler of iteration 0
    h.step(NextIterScheduled(w1, h.now, "worker", ("n2",)))
    h.step(NextIterScheduled(w1, h.now, "nope", ("n2",)))
    story = "\n".join(h.engine.story(w1))
    assert "already placed" in story and "no task 'nope'" in story


def test_run_instance_carries_module_and_timeout() -> None:
    h = Harness()
    h.join("n1")
    out = h.submit(fedavg(worker=task("worker", 7, timeout=5.0)))
    (r,) = runs(out)
    assert isinstance(r, RunInstance)
    assert r.module == "sha256:" + f"{7:064x}" and r.timeout_s == 5.0


def test_schedule_next_iter_to_an_absent_node_names_the_narrowing() -> None:
    h = Harness()
    h.join("n1", "n2")
    out = h.submit(fedavg(iterations=2))
    ids = [r.instance_id for r in runs(out)]
    h.step(NextIterScheduled(ids[0], h.now, "worker", ("n9",)))
    for iid in ids:
        h.run_ok(iid)
    (agg,) = runs(h.log, "agg")
    assert not runs(h.run_ok(agg.instance_id))
    (done,) = finished(h.timer(60.0))
    assert "nodes n1, n2: not chosen by schedule_next_iter" in done.reason
