"""The coordinator takes a default task timeout per swarm, keeps it in its event log,
and replays it after a restart (the simulator's side: tests/sim/test_no_hang.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shoal._coord.events import decode_event, encode_event
from shoal._define.compile import compile_swarm
from shoal._engine.messages import SwarmSubmitted

from .coord_federation import CoordFederation
from .test_conformance import fedavg

pytestmark = pytest.mark.timeout(60)


def test_the_event_log_keeps_a_swarm_default_task_timeout_and_omits_none() -> None:
    plan = compile_swarm(fedavg()).plan
    with_timeout = SwarmSubmitted("s", plan, 4.0, 7, task_timeout_s=30.0)
    assert decode_event(encode_event(with_timeout)) == with_timeout
    without = SwarmSubmitted("s", plan, 4.0, 7)
    assert b"task_timeout_s" not in encode_event(without)  # older logs read the same
    assert decode_event(encode_event(without)) == without


def test_a_coordinator_swarm_uses_its_own_default_task_timeout(tmp_path: Path) -> None:
    fed = CoordFederation(nodes=2, root=tmp_path)
    fed.inject("hang", node="node-00001", task="worker")
    compiled = compile_swarm(fedavg())
    from shoal._runtime.loader import extract_bundle

    for d, b in compiled.bundles.items():
        fed._folders[d] = extract_bundle(b.data, d, tmp_path / "modules")
    t0 = fed.clock.now()
    sid = fed.coord.submit(compiled.plan, 0, "user", 45.0)
    fed.run_until_done(sid)
    run = fed.result(sid)
    assert run.status == "failed"
    (failure,) = run.failures
    assert failure.node_id == "node-00001" and failure.kind == "timeout"
    assert failure.error.startswith("timed out after 45s, the run's default task timeout")
    assert fed.clock.now() - t0 < 600  # its own default, not the engine's


def test_a_coordinator_status_lists_the_running_instances_with_node_and_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from shoal._api.schemas import SWARM_STATUS, decode
    from shoal._cli import render
    from shoal._coord.routes_user import status_doc

    fed = CoordFederation(nodes=3, root=tmp_path)
    fed.inject("hang", node="node-00001", task="worker")
    sid = fed.submit(fedavg())
    while fed.step():  # every node runs what it was given; node-00001's never ends
        pass
    fed.clock.advance(100)
    doc = status_doc(fed.coord.status(sid))
    (stuck,) = doc.running
    assert (stuck.alias, stuck.node_id, stuck.state) == ("worker", "node-00001", "running")
    assert stuck.timeout_s == 600.0 and fed.clock.now() - stuck.since >= 100
    # What `shoal status --watch` receives (JSON) and shows: the stuck node and its age.
    back = decode(SWARM_STATUS, doc.to_dict(), "status")
    assert back.running == doc.running
    monkeypatch.setattr(render.time, "time", fed.clock.now)
    console = Console(width=120, record=True)
    console.print(render.status_view(back))
    text = console.export_text()
    assert "running now: 1 instance(s), oldest first" in text
    assert re.search(r"worker\s+node-00001\s+0\s+1m4\ds\s+10m00s", text), text
