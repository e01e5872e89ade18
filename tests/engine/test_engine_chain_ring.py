"""Chains (order='chain') and rings (order='ring'), fed by events (docs/engine.md)."""

from __future__ import annotations

import pytest
from engine_harness import Harness, finished, plan, runs, task

from shoal._engine.messages import FailureKind
from shoal._plan import Method, Order

pytestmark = pytest.mark.timeout(30)

NODES = ("n1", "n2", "n3", "n4")


def chain_plan(**kw: object) -> object:
    """src (any) -> chain (all, order chain) -> sink (any)."""
    return plan(
        [
            task("src", method=Method.ANY),
            task("chain", 2, order=Order.CHAIN, **kw),  # type: ignore[arg-type]
            task("sink", 3, method=Method.ANY),
        ],
        [("src", "chain"), ("chain", "sink")],
    )


def start_chain(h: Harness, **kw: object) -> str:
    h.join(*NODES)
    (src,) = runs(h.submit(chain_plan(**kw)))
    out = h.run_ok(src.instance_id)
    (first,) = runs(out)
    assert first.alias == "chain" and first.inputs == {"src": (src.instance_id,)}
    return first.instance_id


def test_chain_runs_one_at_a_time_each_seeing_only_the_one_before() -> None:
    h = Harness()
    cur = start_chain(h)
    seen = [h.engine.instance(cur).node_id]
    prev = cur
    for k in range(1, 4):
        out = h.run_ok(prev)
        (nxt,) = runs(out)
        assert nxt.alias == "chain" and nxt.instance_id == f"s/0/chain/{k}/0"
        assert nxt.inputs == {"chain": (prev,)}  # nothing of src, only the one before
        seen.append(nxt.node_id)
        prev = nxt.instance_id
    assert sorted(seen) == list(NODES)  # one instance per eligible node
    out = h.run_ok(prev)
    (sink,) = runs(out)
    assert sink.alias == "sink" and sink.inputs == {"chain": (prev,)}  # only the last
    (done,) = finished(h.run_ok(sink.instance_id))
    assert done.status == "succeeded"


def test_chain_order_is_seeded_and_stable() -> None:
    def order(seed: int) -> list[str]:
        h = Harness()
        h.join(*NODES)
        (src,) = runs(h.submit(chain_plan(), seed=seed))
        (cur,) = runs(h.run_ok(src.instance_id))
        nodes = [cur.node_id]
        for _ in range(3):
            (cur,) = runs(h.run_ok(cur.instance_id))
            nodes.append(cur.node_id)
        return nodes

    assert order(1) == order(1)
    assert len({tuple(order(s)) for s in range(8)}) > 1


def test_chain_retry_keeps_the_inputs_and_the_node_for_all() -> None:
    h = Harness()
    cur = start_chain(h, retries=1)
    (second,) = runs(h.run_ok(cur))
    (again,) = runs(h.fail(second.instance_id))
    assert again.instance_id == "s/0/chain/1/1" and again.node_id == second.node_id
    assert again.inputs == second.inputs == {"chain": (cur,)}


def test_chain_lost_node_without_retries_fails_the_swarm_with_its_reason() -> None:
    h = Harness()
    cur = start_chain(h)
    (second,) = runs(h.run_ok(cur))
    (done,) = finished(h.lose(second.node_id))
    assert done.status == "failed"
    assert "task 'chain' failed in iteration 0" in done.reason
    assert f"on node {second.node_id} (lost)" in done.reason
    assert h.live() == []


def test_chain_lost_node_is_retried_on_another_node_for_any() -> None:
    h = Harness()
    cur = start_chain(h, method=Method.ANY, count=3, retries=1)
    (second,) = runs(h.run_ok(cur))
    out = h.lose(second.node_id)
    (again,) = runs(out)
    assert again.attempt == 1 and again.node_id != second.node_id
    assert again.inputs == {"chain": (cur,)}
    (third,) = runs(h.run_ok(again.instance_id))
    assert third.inputs == {"chain": (again.instance_id,)}


def test_chain_with_min_results_skips_a_failed_slot() -> None:
    h = Harness()
    cur = start_chain(h, min_results=3)
    (second,) = runs(h.run_ok(cur))
    (third,) = runs(h.fail(second.instance_id, kind=FailureKind.CRASH))
    assert third.instance_id == "s/0/chain/2/0"
    assert third.inputs == {"chain": (cur,)}  # the last success
    (fourth,) = runs(h.run_ok(third.instance_id))
    (sink,) = runs(h.run_ok(fourth.instance_id))
    assert sink.inputs == {"chain": (fourth.instance_id,)}
    # A second failure makes 3 unreachable.
    h2 = Harness()
    cur = start_chain(h2, min_results=3)
    (second,) = runs(h2.run_ok(cur))
    (third,) = runs(h2.fail(second.instance_id))
    (done,) = finished(h2.fail(third.instance_id))
    assert done.status == "failed" and "min_results=3" in done.reason


def test_chain_timeout_fails_and_is_retried() -> None:
    h = Harness()
    cur = start_chain(h, timeout=5.0, retries=1)
    out = h.timer(h.now + 5.0)
    (again,) = runs(out)
    assert again.instance_id.endswith("/0/1")
    assert h.engine.instance(cur).error.startswith("timed out")
    out = h.timer(h.now + 5.0)
    (done,) = finished(out)
    assert done.status == "failed" and "timeout" in done.reason


def ring_plan(rounds: int | None = None, **kw: object) -> object:
    return plan(
        [
            task("src", method=Method.ANY),
            task("ring", 2, order=Order.RING, rounds=rounds, **kw),  # type: ignore[arg-type]
            task("sink", 3, method=Method.ANY),
        ],
        [("src", "ring"), ("ring", "sink")],
    )


def test_ring_round_r_node_i_sees_node_i_minus_1_of_round_r_minus_1() -> None:
    h = Harness()
    n = 3
    h.join(*NODES[:n])
    (src,) = runs(h.submit(ring_plan()))
    round0 = runs(h.run_ok(src.instance_id))
    assert [r.instance_id for r in round0] == [f"s/0/ring/{i}/0" for i in range(n)]
    assert all(r.inputs == {"src": (src.instance_id,)} for r in round0)
    node_at = {i: r.node_id for i, r in enumerate(round0)}
    # Each value: which nodes updated it.
    touched = {r.instance_id: {r.node_id} for r in round0}
    pending = [r.instance_id for r in round0]
    sink = None
    while pending:
        iid = pending.pop(0)
        for r in runs(h.run_ok(iid)):
            if r.alias == "sink":
                sink = r
                continue
            (prev,) = r.inputs["ring"]
            assert list(r.inputs) == ["ring"]
            slot = int(r.instance_id.split("/")[3])
            rnd, i = divmod(slot, n)
            assert prev == f"s/0/ring/{(rnd - 1) * n + (i - 1) % n}/0"
            assert r.node_id == node_at[i]
            touched[r.instance_id] = touched[prev] | {r.node_id}
            pending.append(r.instance_id)
    assert sink is not None
    last = sink.inputs["ring"]
    assert sorted(last) == [f"s/0/ring/{(n - 1) * n + i}/0" for i in range(n)]
    assert all(touched[iid] == set(NODES[:n]) for iid in last)  # every node updated all


def test_ring_lost_node_mid_ring_fails_with_reason_or_is_retried() -> None:
    h = Harness()
    h.join(*NODES[:3])
    (src,) = runs(h.submit(ring_plan()))
    round0 = runs(h.run_ok(src.instance_id))
    h.run_ok(round0[0].instance_id)
    (done,) = finished(h.lose(round0[1].node_id))
    assert done.status == "failed"
    assert "ring task 'ring' lost slot" in done.reason and "(lost)" in done.reason
    assert h.live() == []
    # With retries (method any) the slot moves to a spare node and the ring goes on.
    h = Harness()
    h.join(*NODES)
    (src,) = runs(h.submit(ring_plan(rounds=2, method=Method.ANY, count=3, retries=1)))
    round0 = runs(h.run_ok(src.instance_id))
    (again,) = runs(h.lose(round0[1].node_id))
    assert again.attempt == 1 and again.inputs == round0[1].inputs
    h.complete_all()
    assert h.engine.swarm("s").status == "succeeded"


def test_ring_min_results_counts_the_last_round() -> None:
    h = Harness()
    h.join(*NODES[:3])
    (src,) = runs(h.submit(ring_plan(rounds=2, min_results=2)))
    round0 = runs(h.run_ok(src.instance_id))
    round1 = [r for iid in [x.instance_id for x in round0] for r in runs(h.run_ok(iid))]
    assert len(round1) == 3
    h.fail(round1[0].instance_id)
    h.run_ok(round1[1].instance_id)
    out = h.run_ok(round1[2].instance_id)
    (sink,) = runs(out, "sink")
    assert len(sink.inputs["ring"]) == 2
