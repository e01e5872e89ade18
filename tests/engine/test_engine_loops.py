"""Inner loops (Plan.loops, TaskSpec.loop), fed by events (docs/engine.md, "Inner loops")."""

from __future__ import annotations

import pytest
from engine_harness import Harness, finished, iterations, plan, runs, task

from shoal._engine import Engine
from shoal._engine.messages import InstanceStarted, InstanceSucceeded, RunInstance
from shoal._errors import PlanError
from shoal._plan import LoopSpec, LoopUntil, Method, Order, Plan, load_plan

pytestmark = pytest.mark.timeout(30)

NODES = ("n1", "n2", "n3")


def loop_plan(
    times: int = 3,
    until: LoopUntil | None = None,
    *,
    train_retries: int = 0,
    iterations_: int | None = 1,
) -> Plan:
    """init (any) -> [train (all) -> agg (any)] x times -> report (any)."""
    p = plan(
        [
            task("init", method=Method.ANY),
            task("train", 2, loop="fit", retries=train_retries),
            task("agg", 3, method=Method.ANY, loop="fit"),
            task("report", 4, method=Method.ANY),
        ],
        [("init", "train"), ("train", "agg"), ("agg", "report")],
        max_iterations=iterations_,
        loops={"fit": LoopSpec(times=times, until=until)},
    )
    return p


def start(h: Harness, p: Plan) -> tuple[RunInstance, list[RunInstance]]:
    """Join the nodes, submit, run init: return init and pass 0's train instances."""
    h.join(*NODES)
    (init,) = runs(h.submit(p))
    trains = runs(h.run_ok(init.instance_id))
    return init, trains


def run_pass(
    h: Harness, trains: list[RunInstance], value: float | None = None
) -> tuple[RunInstance, list]:
    """Succeed a pass's train instances and its agg (reporting ``value``)."""
    out: list = []
    for t in trains:
        out = h.run_ok(t.instance_id)
    (agg,) = runs(out, "agg")
    h.start(agg.instance_id)
    return agg, h.step(InstanceSucceeded(agg.instance_id, h.now, loop_value=value))


def test_a_loop_runs_its_tasks_times_passes_then_the_task_after_it() -> None:
    h = Harness()
    init, trains = start(h, loop_plan(times=3))
    assert [t.instance_id for t in trains] == [f"s/0.0/train/{i}/0" for i in range(3)]
    assert all(t.loop_pass == 0 and t.iteration == 0 for t in trains)
    assert all(t.inputs == {"init": (init.instance_id,)} for t in trains)
    aggs = []
    for p in range(3):
        agg, out = run_pass(h, trains)
        assert agg.instance_id == f"s/0.{p}/agg/0/0" and agg.loop_pass == p
        aggs.append(agg)
        trains = runs(out, "train")
        if p < 2:
            # Pass p+1 starts at once; its entry sees the upstream and pass p's exit.
            assert [t.loop_pass for t in trains] == [p + 1] * 3
            assert all(
                t.inputs == {"init": (init.instance_id,), "agg": (agg.instance_id,)} for t in trains
            )
            assert runs(out, "report") == []
    (report,) = runs(out, "report")
    assert report.loop_pass is None and report.instance_id == "s/0/report/0/0"
    assert report.inputs == {"agg": (aggs[-1].instance_id,)}  # only the last pass
    (done,) = finished(h.run_ok(report.instance_id))
    assert done.status == "succeeded" and done.iterations == 1
    # The story of the last exit says why the loop ended.
    assert any(
        "3 pass(es) ran; the loop ends" in line for line in h.engine.story(aggs[-1].instance_id)
    )


def test_inside_a_pass_a_loop_task_sees_this_pass_only() -> None:
    h = Harness()
    _, trains = start(h, loop_plan(times=2))
    _, out = run_pass(h, trains)
    trains1 = runs(out, "train")
    out = []
    for t in trains1:
        out = h.run_ok(t.instance_id)
    (agg1,) = runs(out, "agg")
    assert agg1.inputs == {"train": tuple(t.instance_id for t in trains1)}


def test_until_stops_the_loop_early_when_the_exit_reports_a_value_that_holds() -> None:
    until = LoopUntil(tag="accuracy", op=">=", value=0.9)
    h = Harness()
    _, trains = start(h, loop_plan(times=10, until=until))
    _, out = run_pass(h, trains, 0.5)
    trains = runs(out, "train")
    assert len(trains) == 3 and runs(out, "report") == []
    _, out = run_pass(h, trains, None)  # no value: does not hold
    trains = runs(out, "train")
    assert len(trains) == 3
    agg, out = run_pass(h, trains, 0.95)
    (report,) = runs(out, "report")
    assert runs(out, "train") == [] and report.inputs == {"agg": (agg.instance_id,)}
    assert agg.instance_id == "s/0.2/agg/0/0"
    story = h.engine.story(agg.instance_id)
    assert any("until accuracy >= 0.9 holds (0.95); the loop ends" in line for line in story)
    (done,) = finished(h.run_ok(report.instance_id))
    assert done.status == "succeeded"


def test_until_needs_every_exit_instance_to_hold() -> None:
    """A loop whose exit runs on every node stops only when each node's value holds."""
    p = plan(
        [task("train", loop="fit"), task("after", 2, method=Method.ANY)],
        [("train", "after")],
        loops={"fit": LoopSpec(times=5, until=LoopUntil(tag="m", op="<", value=1))},
    )
    h = Harness()
    h.join(*NODES)
    trains = runs(h.submit(p))
    assert [t.inputs for t in trains] == [{}, {}, {}]
    out: list = []
    for t, v in zip(trains, (0.5, 2.0, 0.1), strict=True):
        h.start(t.instance_id)
        out = h.step(InstanceSucceeded(t.instance_id, h.now, loop_value=v))
    nxt = runs(out, "train")
    assert len(nxt) == 3  # node 2 said 2.0: another pass
    # A one-task loop carries its own previous pass.
    assert nxt[0].inputs == {"train": tuple(t.instance_id for t in trains)}
    for t in nxt:
        h.start(t.instance_id)
        out = h.step(InstanceSucceeded(t.instance_id, h.now, loop_value=0.0))
    (after,) = runs(out, "after")
    assert after.inputs == {"train": tuple(t.instance_id for t in nxt)}


def test_each_outer_iteration_runs_the_loop_again() -> None:
    h = Harness()
    _, trains = start(h, loop_plan(times=2, iterations_=2))
    for _ in range(2):
        _, out = run_pass(h, trains)
        trains = runs(out, "train")
    (report,) = runs(out, "report")
    out = h.run_ok(report.instance_id)
    assert iterations(out) == [1]
    (init1,) = runs(out, "init")
    trains = runs(h.run_ok(init1.instance_id))
    assert [t.instance_id for t in trains] == [f"s/1.0/train/{i}/0" for i in range(3)]
    for _ in range(2):
        _, out = run_pass(h, trains)
        trains = runs(out, "train")
    (report,) = runs(out, "report")
    (done,) = finished(h.run_ok(report.instance_id))
    assert done.status == "succeeded" and done.iterations == 2


def test_a_node_lost_mid_loop_is_retried_in_place_and_the_loop_goes_on() -> None:
    h = Harness()
    _, trains = start(h, loop_plan(times=2, train_retries=1))
    _, out = run_pass(h, trains)
    trains1 = runs(out, "train")
    lost = trains1[1]
    out = h.step(InstanceStarted(lost.instance_id, h.now))
    # The node's agent restarts (it stays connected): method all retries in place.
    from shoal._engine.messages import NodeRestarted

    (retry,) = runs(h.step(NodeRestarted(lost.node_id, h.now)))
    assert retry.instance_id == "s/0.1/train/1/1" and retry.loop_pass == 1
    assert retry.inputs == lost.inputs  # the carry too
    out = []
    for t in (trains1[0], retry, trains1[2]):
        out = h.run_ok(t.instance_id)
    (agg,) = runs(out, "agg")
    (report,) = runs(h.run_ok(agg.instance_id), "report")
    (done,) = finished(h.run_ok(report.instance_id))
    assert done.status == "succeeded"


def test_a_node_lost_mid_loop_without_retries_fails_the_swarm_with_its_reason() -> None:
    h = Harness()
    _, trains = start(h, loop_plan(times=3))
    _, out = run_pass(h, trains)
    trains1 = runs(out, "train")
    h.run_ok(trains1[0].instance_id)
    (done,) = finished(h.lose(trains1[1].node_id))
    assert done.status == "failed"
    assert "task 'train' failed in iteration 0" in done.reason
    assert f"s/0.1/train/1/0 on node {trains1[1].node_id} (lost)" in done.reason
    assert [f.instance_id for f in done.failures] == ["s/0.1/train/1/0"]
    assert h.live() == []  # nothing left running, nothing hangs


def test_a_timeout_inside_a_loop_fails_the_instance_and_is_retried() -> None:
    p = plan(
        [task("step", loop="l", method=Method.ANY, timeout=5.0, retries=1)],
        loops={"l": LoopSpec(times=2)},
    )
    h = Harness()
    h.join("n1", "n2")
    (first,) = runs(h.submit(p))
    (second,) = runs(h.run_ok(first.instance_id))
    assert second.instance_id == "s/0.1/step/0/0"
    (retry,) = runs(h.timer(h.now + 5.0))
    assert retry.instance_id == "s/0.1/step/0/1" and retry.inputs == {"step": (first.instance_id,)}
    (done,) = finished(h.run_ok(retry.instance_id))
    assert done.status == "succeeded"


def test_a_chain_inside_a_loop_carries_its_last_instance() -> None:
    p = plan(
        [task("walk", loop="l", order=Order.CHAIN), task("end", 2, method=Method.ANY)],
        [("walk", "end")],
        loops={"l": LoopSpec(times=2)},
    )
    h = Harness()
    h.join(*NODES)
    (cur,) = runs(h.submit(p))
    for _ in range(2):
        (cur,) = runs(h.run_ok(cur.instance_id))
    last0 = cur
    (cur,) = runs(h.run_ok(last0.instance_id))
    assert cur.instance_id == "s/0.1/walk/0/0" and cur.inputs == {"walk": (last0.instance_id,)}
    for _ in range(2):
        (cur,) = runs(h.run_ok(cur.instance_id))
    (end,) = runs(h.run_ok(cur.instance_id))
    assert end.inputs == {"walk": (cur.instance_id,)}


def test_replaying_the_event_log_gives_the_same_instructions() -> None:
    h = Harness()
    _, trains = start(h, loop_plan(times=4, until=LoopUntil(tag="a", op=">", value=1.0)))
    value = 0.0
    while True:
        value += 0.4
        _, out = run_pass(h, trains, value)
        trains = runs(out, "train")
        if not trains:
            break
    (report,) = runs(out, "report")
    h.run_ok(report.instance_id)
    assert h.engine.swarm("s").status == "succeeded"
    assert h.engine.instance("s/0.2/agg/0/0").state.value == "succeeded"  # 1.2 > 1 stops it
    assert h.engine.find_instance("s/0.3/agg/0/0") is None
    replayed = Engine()
    assert replayed.handle_many(h.events) == h.log


def test_plans_with_loops_round_trip_and_bad_loops_are_refused() -> None:
    p = loop_plan(until=LoopUntil(tag="products", key="acc", op=">=", value=0.5))
    again = load_plan(p.to_json())
    assert again == p and again.loops["fit"].until is not None
    assert '"key": "acc"' in p.to_json()
    assert '"until"' not in loop_plan().to_json()  # left out while None
    assert p.loop_entries("fit") == ("train",) and p.loop_exits("fit") == ("agg",)
    # A path that leaves the loop and comes back is refused, naming the task between.
    doc = p.model_dump(mode="json")
    doc["tasks"].append(
        {"alias": "side", "module": doc["tasks"][0]["module"]},
    )
    doc["edges"] += [["train", "side"], ["side", "agg"]]
    with pytest.raises(PlanError, match="loop 'fit' is not contiguous: task 'side'"):
        load_plan(__import__("json").dumps(doc))
