"""The engine's read-only views that drivers read instead of keeping copies."""

from __future__ import annotations

import pytest
from engine_harness import Harness, finished, plan, runs, scripted, task

from shoal._engine import Engine, InstanceState, TaskCounts
from shoal._engine.messages import NodeJoined, RunInstance, SwarmSubmitted
from shoal._plan import Method


def test_fixed_nodes_fails_a_task_without_eligible_node_at_once() -> None:
    engine = Engine(fixed_nodes=True)
    engine.handle(NodeJoined("n1", 0.0))
    p = plan([task("worker", gpu=True)], placement_timeout=60.0)
    (done,) = finished(engine.handle(SwarmSubmitted("s", p, 0.0, 0)))
    assert done.status == "failed"
    assert "found no eligible node in iteration 0 (no node can join: the node set is fixed)" in (
        done.reason
    )
    assert "node n1: no GPU" in done.reason


def _recount(h: Harness, swarm_id: str, iteration: int) -> dict[str, TaskCounts]:
    """Counts rebuilt from every RunInstance the engine ever sent and its state now."""
    acc: dict[str, list[int]] = {}
    for r in runs(h.log):
        if (r.swarm_id, r.iteration) != (swarm_id, iteration):
            continue
        c = acc.setdefault(r.alias, [0, 0, 0, 0])
        state = h.engine.instance(r.instance_id).state
        c[0] += 1
        c[1] += state is InstanceState.RUNNING
        c[2] += state is InstanceState.SUCCEEDED
        c[3] += state is InstanceState.FAILED
    return {a: TaskCounts(*c) for a, c in acc.items()}


@pytest.mark.parametrize("seed", range(12))
def test_counts_active_and_nodes_agree_with_the_instruction_log(seed: int) -> None:
    h = scripted(seed)
    for sid in h.engine.swarm_ids():
        it = h.engine.swarm(sid).iteration
        counts = h.engine.counts(sid)
        assert set(counts) == {t.alias for t in h.engine.plan(sid).tasks}
        recount = _recount(h, sid, it)
        for alias, c in counts.items():
            assert c == recount.get(alias, TaskCounts()), (sid, it, alias)
    live = [r for r in runs(h.log) if not h.engine.instance(r.instance_id).ended]
    assert sorted(i.instance_id for i in h.engine.active()) == sorted(r.instance_id for r in live)
    for view in h.engine.nodes():
        mine = sorted(i.instance_id for i in h.engine.active(view.node_id))
        assert mine == sorted(r.instance_id for r in live if r.node_id == view.node_id)
        assert view.running == len(mine)
    for r in live:
        inst = h.engine.find_instance(r.instance_id)
        assert inst is not None and (inst.module, inst.timeout_s) == (r.module, r.timeout_s)
    assert h.engine.find_instance("nope/0/x/0/0") is None


def test_a_retried_slot_counts_every_attempt() -> None:
    h = Harness()
    h.join("n1")
    h.join("n2")
    out = h.submit(plan([task("worker", method=Method.ANY, count=1, retries=2)]))
    (first,) = runs(out)
    h.start(first.instance_id)
    (second,) = [r for r in runs(h.fail(first.instance_id)) if isinstance(r, RunInstance)]
    h.start(second.instance_id)
    assert h.engine.counts("s")["worker"] == TaskCounts(scheduled=2, running=1, failed=1)
    h.succeed(second.instance_id)
    assert h.engine.counts("s", 0)["worker"] == TaskCounts(scheduled=2, succeeded=1, failed=1)
