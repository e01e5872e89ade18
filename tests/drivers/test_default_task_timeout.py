"""The coordinator takes a default task timeout per swarm, keeps it in its event log,
and replays it after a restart (the simulator's side: tests/sim/test_no_hang.py)."""

from __future__ import annotations

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
