"""Random interleavings never break an invariant, and every swarm can be finished."""

from __future__ import annotations

from engine_harness import Harness, finished, plan, task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal._engine import EngineError, InstanceState
from shoal._engine.messages import (
    InstanceSucceeded,
    NextIterScheduled,
    NodeRestarted,
    StopRequested,
    StopSwarmCalled,
)
from shoal._plan import ConditionKind, Method, Plan

ACTIONS = (
    "start",
    "succeed",
    "fail",
    "lose",
    "restart",
    "join",
    "timer",
    "stop",
    "next",
    "user",
    "dup",
)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    worker = task(
        "worker",
        method=draw(st.sampled_from(list(Method))),
        count=draw(st.none() | st.integers(1, 3)),
        retries=draw(st.integers(0, 2)),
        condition=draw(st.sampled_from(list(ConditionKind))),
        min_results=draw(st.none() | st.integers(1, 2)),
        timeout=draw(st.none() | st.just(5.0)),
        fixed=draw(st.booleans()),
    )
    agg = task("agg", 2, method=Method.ANY, retries=draw(st.integers(0, 1)))
    side = task("side", 3, method=Method.RANDOM, condition=ConditionKind.RESULT, min_results=1)
    return plan(
        [worker, agg, side],
        [("worker", "agg"), ("side", "agg")],
        max_iterations=draw(st.integers(1, 3)),
        placement_timeout=draw(st.sampled_from([0.0, 10.0])),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), plan_a=plans(), plan_b=plans())
def test_random_interleavings_keep_invariants_and_finish(
    data: st.DataObject, plan_a: Plan, plan_b: Plan
) -> None:
    h = Harness()
    names = [f"n{i}" for i in range(data.draw(st.integers(1, 5), label="nodes"))]
    h.join(*names)
    h.submit(plan_a, "a", seed=1)
    h.submit(plan_b, "b", seed=2)
    ids = {"a", "b"}
    pick = st.sampled_from
    for _ in range(data.draw(st.integers(0, 80), label="steps")):
        action = data.draw(pick(ACTIONS), label="action")
        live = h.live()
        known = [r.instance_id for r in h.log if hasattr(r, "instance_id") and
                 type(r).__name__ == "RunInstance"]  # fmt: skip
        if action in ("start", "succeed", "fail", "stop", "next") and live:
            iid = data.draw(pick(live), label="instance")
            state = h.engine.instance(iid).state
            if action == "start" and state is InstanceState.SCHEDULED:
                h.start(iid)
            elif action == "succeed":
                h.succeed(iid)
            elif action == "fail":
                h.fail(iid)
            elif action == "stop":
                h.step(StopSwarmCalled(iid, h.now))
            elif action == "next":
                nodes = tuple(data.draw(st.lists(pick(names), max_size=3), label="narrow"))
                h.step(NextIterScheduled(iid, h.now, "worker", nodes))
        elif action == "lose":
            h.lose(data.draw(pick(names), label="lost"))
        elif action == "restart":
            h.step(NodeRestarted(data.draw(pick(names), label="restarted"), h.now))
        elif action == "join":
            h.join(data.draw(pick(names), label="joined"))
        elif action == "timer":
            h.timer(h.tick(data.draw(pick([1.0, 5.0, 11.0]), label="dt")))
        elif action == "user":
            h.step(StopRequested(data.draw(pick(sorted(ids)), label="swarm"), h.now))
        elif action == "dup" and known:
            iid = data.draw(pick(known), label="dup")
            inst = h.engine.instance(iid)
            if inst.state is InstanceState.SUCCEEDED:
                err = h.reject(InstanceSucceeded(iid, h.now))
                assert err.code == "engine.impossible_move"
            elif inst.state in (InstanceState.CANCELLED, InstanceState.FAILED):
                # Late if the engine ended it (timeout, lost, cancel), else impossible.
                out = h.attempt(InstanceSucceeded(iid, h.now))
                if isinstance(out, EngineError):
                    assert out.code == "engine.impossible_move"
                else:
                    assert out == [] and "late report ignored" in h.engine.story(iid)[-1]

    # Drive everything to completion: bring every node back, then let all succeed.
    h.join(*names)
    for _ in range(2_000):
        if all(h.engine.swarm(s).status != "running" for s in ids):
            break
        live = h.live()
        if live:
            iid = live[0]
            if h.engine.instance(iid).state is InstanceState.SCHEDULED:
                h.start(iid)
            h.succeed(iid)
        else:
            h.timer(h.tick(100.0))  # only a placement wait can be left
    statuses = {h.engine.swarm(s).status for s in ids}
    assert "running" not in statuses
    assert {f.swarm_id for f in finished(h.log)} == ids
    assert not h.live()
