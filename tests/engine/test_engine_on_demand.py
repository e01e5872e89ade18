"""On-demand tasks run by ``world.invoke`` (InvokeCalled -> InvokeFinished), fed by
events: placement, inputs, retries, node loss, timeouts, min_results, caller's end."""

from __future__ import annotations

import pytest
from engine_harness import Harness, finished, plan, runs, task

from shoal._engine.messages import Instruction, InvokeCalled, InvokeFinished
from shoal._plan import Method

pytestmark = pytest.mark.timeout(30)

CLIENTS = ("c1", "c2", "c3")


def answers(out: list[Instruction]) -> list[InvokeFinished]:
    return [i for i in out if isinstance(i, InvokeFinished)]


def start(h: Harness, **kw: object) -> str:
    """A controller on 'server' and an on-demand 'train' on every client."""
    h.join("server", *CLIENTS)
    p = plan(
        [
            task("ctl", specified=["server"], timeout=100.0),
            task("train", 2, on_demand=True, excepted=["server"], **kw),  # type: ignore[arg-type]
        ],
        sinks=["ctl"],
    )
    (ctl,) = runs(h.submit(p))
    assert ctl.alias == "ctl"  # the on-demand task is not started by the graph
    h.start(ctl.instance_id)
    return ctl.instance_id


def invoke(h: Harness, ctl: str, n: int = 0, **kw: object) -> list[Instruction]:
    return h.step(InvokeCalled(ctl, h.now, f"{ctl}#{n}", "train", **kw))  # type: ignore[arg-type]


def test_invoke_runs_on_every_eligible_node_and_answers_with_their_results() -> None:
    h = Harness()
    ctl = start(h)
    out = invoke(h, ctl)
    placed = runs(out)
    assert sorted(r.node_id for r in placed) == list(CLIENTS)
    assert all(r.inputs == {"ctl": (ctl,)} and r.invoke == f"{ctl}#0" for r in placed)
    assert placed[0].instance_id == "s/0/train/c0.0/0"
    for r in placed[:-1]:
        assert answers(h.run_ok(r.instance_id)) == []
    (ans,) = answers(h.run_ok(placed[-1].instance_id))
    assert ans.status == "succeeded" and ans.caller_instance_id == ctl
    assert ans.results == {r.node_id: r.instance_id for r in placed}
    # A second call, to chosen nodes; then the controller ends the swarm.
    placed = runs(invoke(h, ctl, 1, node_ids=("c2",)))
    assert [r.node_id for r in placed] == ["c2"] and placed[0].instance_id.startswith(
        "s/0/train/c1.0/"
    )
    (ans,) = answers(h.run_ok(placed[0].instance_id))
    assert ans.results == {"c2": placed[0].instance_id}
    (done,) = finished(h.succeed(ctl))
    assert done.status == "succeeded"


def test_invoke_retries_a_lost_node_elsewhere() -> None:
    h = Harness()
    ctl = start(h, method=Method.ANY, count=2, retries=1)
    placed = runs(invoke(h, ctl))
    assert len(placed) == 2
    (again,) = runs(h.lose(placed[0].node_id))
    assert again.attempt == 1 and again.node_id not in {r.node_id for r in placed}
    assert again.inputs == {"ctl": (ctl,)}
    h.run_ok(placed[1].instance_id)
    (ans,) = answers(h.run_ok(again.instance_id))
    assert ans.status == "succeeded" and len(ans.results) == 2


def test_dead_clients_fail_the_call_or_continue_per_min_results() -> None:
    h = Harness()
    ctl = start(h)
    placed = runs(invoke(h, ctl, min_results=2))
    h.run_ok(placed[0].instance_id)
    assert answers(h.lose(placed[1].node_id)) == []  # 2 still reachable
    (ans,) = answers(h.run_ok(placed[2].instance_id))
    assert ans.status == "succeeded" and len(ans.results) == 2
    assert [f.kind for f in ans.failures] == ["lost"]
    # Now two of three die: min_results=2 is out of reach, the call fails at once.
    h2 = Harness()
    ctl = start(h2)
    placed = runs(invoke(h2, ctl, min_results=2))
    h2.lose(placed[0].node_id)
    out = h2.lose(placed[1].node_id)
    (ans,) = answers(out)
    assert ans.status == "failed" and "min_results=2" in ans.reason and "(lost)" in ans.reason
    assert len(ans.failures) == 2
    assert [c.instance_id for c in out if type(c).__name__ == "CancelInstance"] == [
        placed[2].instance_id
    ]
    # The controller keeps running and decides: here it fails the swarm itself.
    assert h2.engine.instance(ctl).state.value == "running"


def test_call_timeout_ends_the_call_and_pauses_the_callers_own_timeout() -> None:
    h = Harness()
    ctl = start(h)
    placed = runs(invoke(h, ctl, min_results=1, timeout_s=50.0))
    h.now = 10.0
    h.run_ok(placed[0].instance_id)
    out = h.timer(50.0)
    (ans,) = answers(out)
    assert ans.status == "succeeded" and list(ans.results) == [placed[0].node_id]
    assert {c.instance_id for c in out if type(c).__name__ == "CancelInstance"} == {
        r.instance_id for r in placed[1:]
    }
    # The controller's 100 s timeout was paused for the 50 s of the call.
    assert h.engine.instance(ctl).timeout_s == 100.0
    h.timer(120.0)
    assert h.engine.instance(ctl).state.value == "running"
    (done,) = finished(h.timer(150.0))
    assert done.status == "failed" and "timed out" in done.reason


def test_call_timeout_without_enough_results_fails_the_call() -> None:
    h = Harness()
    ctl = start(h)
    invoke(h, ctl, timeout_s=5.0)
    (ans,) = answers(h.timer(5.0))
    assert ans.status == "failed" and "timed out" in ans.reason


def test_caller_lost_cancels_its_call_and_never_hangs() -> None:
    h = Harness()
    ctl = start(h)
    placed = runs(invoke(h, ctl))
    out = h.lose("server")
    (done,) = finished(out)
    assert done.status == "failed"
    assert h.live() == []
    assert answers(out) == []
    assert all(h.engine.instance(r.instance_id).state.value == "cancelled" for r in placed)


def test_invoking_a_graph_task_or_ineligible_nodes_fails_the_call_at_once() -> None:
    h = Harness()
    ctl = start(h)
    (ans,) = answers(h.step(InvokeCalled(ctl, h.now, f"{ctl}#0", "ctl")))
    assert ans.status == "failed" and "not declared on_demand" in ans.reason
    (ans,) = answers(invoke(h, ctl, 1, node_ids=("server",)))
    assert ans.status == "failed" and "['server'] are not eligible" in ans.reason
    assert "excepted_ids" in ans.reason
