"""The coordinator driver in process, on a virtual clock: no HTTP, no sleeps.

Node agents are replaced by direct calls (tests/drivers/coord_federation.py), so these
tests reach what the process tests reach in 10-17 s (heartbeat loss, replay after a
restart, reports from the wrong node) in milliseconds, with every engine invariant
checked after every event.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from drivers.coord_federation import HEARTBEAT_S, CoordFederation
from drivers.test_conformance import MEAN, WORKER, Graph, fedavg

from shoal._coord.errors import ApiError
from shoal._coord.state import Offer
from shoal._store.sql import SQLStore

pytestmark = pytest.mark.timeout(60)


def test_enrol_joins_the_node_and_a_new_offer_rejoins_it(tmp_path: Path) -> None:
    fed = CoordFederation(nodes=2, root=tmp_path)
    view = fed.coord.engine.node("node-00001")
    assert view is not None and view.connected and view.datasets == frozenset()
    fed.coord.heartbeat("node-00001", Offer(frozenset({"mnist"})), "s1", [])
    view = fed.coord.engine.node("node-00001")
    assert view is not None and view.datasets == {"mnist"}
    reports = {r.record.node_id: r for r in fed.coord.nodes()}
    assert reports["node-00001"].record.datasets == ("mnist",)  # stored as well
    assert reports["node-00001"].last_seen == fed.clock.now()


def test_a_silent_node_is_lost_after_the_heartbeat_timeout_and_its_work_retried(
    tmp_path: Path,
) -> None:
    fed = CoordFederation(nodes=3, root=tmp_path)
    fed.inject("hang", node="node-00001", task="worker")
    sid = fed.submit(Graph([("worker", WORKER, {"method": "any", "maximum": 2, "retries": 1}, [])]))
    while fed.step():
        pass
    assert "node-00001" in fed.hung.values()
    fed.down.add("node-00001")  # its agent dies: no heartbeat, no poll
    t0 = fed.clock.now()
    while fed.coord.engine.node("node-00001").connected:  # type: ignore[union-attr]
        fed.pass_time()
        assert fed.clock.now() - t0 < 2 * HEARTBEAT_S, "the node was never lost"
    assert fed.clock.now() - t0 > HEARTBEAT_S, "the node was lost before its timeout"
    fed.run_until_done(sid)
    run = fed.result(sid)
    assert run.status == "succeeded", run.reason
    [lost] = run.failures
    assert lost.node_id == "node-00001" and lost.kind == "lost"
    assert "no heartbeat for 15s" in lost.error
    assert any("retried as" in line for line in run.story(lost.instance_id))
    assert not fed.coord.engine.node("node-00001").connected  # type: ignore[union-attr]


def test_reports_are_checked_against_the_engine(tmp_path: Path) -> None:
    fed = CoordFederation(nodes=2, root=tmp_path)
    fed.inject("hang", task="worker")
    sid = fed.submit(Graph([("worker", WORKER, {"method": "all"}, [])]))
    fed.step()
    iid, node = next(iter(fed.hung.items()))
    other = "node-00000" if node != "node-00000" else "node-00001"
    with pytest.raises(ApiError) as e:
        fed.coord.done(other, iid, True, "", "", "error")
    assert e.value.status == 403
    with pytest.raises(ApiError) as e:
        fed.coord.done(node, f"{sid}/9/worker/0/0", True, "", "", "error")
    assert e.value.status == 404
    fed.coord.done(node, iid, True, "", "", "error")
    fed.coord.done(node, iid, True, "", "", "error")  # a repeat is acknowledged, ignored
    assert fed.coord.engine.instance(iid).state.value == "succeeded"
    counts = fed.coord.counts(sid)["worker"]
    assert (counts.scheduled, counts.running, counts.succeeded) == (2, 1, 1)


def test_a_heartbeat_naming_an_ended_instance_gets_a_cancel(tmp_path: Path) -> None:
    fed = CoordFederation(nodes=1, root=tmp_path)
    fed.coord.heartbeat("node-00000", fed.offer("node-00000"), "s1", ["gone/0/w/0/0"])
    [item] = fed.coord.queues.take_now("node-00000")
    assert item.kind == "cancel" and item.instance_id == "gone/0/w/0/0"


def test_a_restarted_coordinator_replays_its_log_and_finishes_the_swarm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coord.db'}"
    fed = CoordFederation(nodes=3, root=tmp_path, store=SQLStore(url))
    sid = fed.submit(fedavg())
    for _ in range(4):  # the first iteration and part of the second
        fed.step()
    before = fed.coord.engine.swarm(sid)
    live = sorted(i.instance_id for i in fed.coord.engine.active())
    assert before.status == "running" and live

    replayed = fed.restart(SQLStore(url))
    assert replayed > 10
    after = fed.coord.engine.swarm(sid)
    assert (after.status, after.iteration) == (before.status, before.iteration)
    assert sorted(i.instance_id for i in fed.coord.engine.active()) == live
    # Every live instance is offered to its node again (after=0: look, acknowledge none).
    queued = {i.instance_id for n in fed.infos for i in fed.coord.queues.take_now(n, 0)}
    assert queued == set(live)
    fed.run_until_done(sid)
    run = fed.result(sid)
    assert run.status == "succeeded", run.reason
    assert run.iterations == 3
    assert run.global_("base") == 3.0  # the same answer as a run without the restart


def test_a_placement_waits_for_a_node_that_joins_later(tmp_path: Path) -> None:
    fed = CoordFederation(nodes=2, root=tmp_path)
    from shoal import Module

    needs = Module(WORKER.python_program, name="needs", datasets=["d"])
    sid = fed.submit(Graph([("worker", needs, {}, []), ("agg", MEAN, {}, ["worker"])]))
    fed.pass_time(10.0)
    assert fed.running(sid)  # waiting, not failed: a node may still come
    fed.infos["node-00001"].datasets = {"d": tmp_path}  # type: ignore[assignment]
    fed.coord.heartbeat("node-00001", fed.offer("node-00001"), "s1", [])
    fed.run_until_done(sid)
    assert fed.result(sid).status == "succeeded"
