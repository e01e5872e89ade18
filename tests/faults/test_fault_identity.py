"""Node identity with real processes (#14, point 2): an impostor holding the join token
cannot take over a running node; the operator revokes a live node at once; a node
rotates its credential while its agent runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from deploy_harness import QUIET, global_value, results, submit
from fault_harness import Fed
from fault_swarms import Chain, Counter, fault_free

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def test_an_impostor_enrolment_is_refused_while_a_swarm_runs(fed: Fed) -> None:
    coord = fed.start(heartbeat_timeout=8.0)
    for n in ("n0", "n1"):
        fed.node(n)
    fed.wait_connected("n0", "n1")
    credential = fed.nodes["n1"].credential().strip()
    swarm_id = submit(fed.user, Counter(iterations=2, sleep=1.5, slow=0, retries=0))
    fed.wait_log(swarm_id, "working: iteration 0 on n1 runs 0")

    # Anyone with the join token (every node has it) tries to become n1.
    impostor = httpx.post(
        f"{coord.url}/v1/nodes/enrol",
        json={"join_token": coord.join_token, "node_id": "n1", "datasets": []},
        timeout=30,
    )
    assert impostor.status_code == 403, impostor.text
    assert impostor.json()["error"]["code"] == "auth.identity"

    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert status["failures"] == []  # the real n1 kept its instance
    for it in range(2):  # and its local state: nobody else ran as n1
        rows = results(fed.user, swarm_id, "runs", alias="counter", iteration=it)
        assert sorted((r["node_id"], r["value"]) for r in rows) == [("n0", it + 1), ("n1", it + 1)]
    node = fed.nodes["n1"]
    assert node.credential().strip() == credential
    assert node.log().count("enrolled node") == 1
    assert "refused enrolment of node n1" in coord.output()


def test_a_revoked_node_loses_its_instances_at_once_and_its_agent_stops(fed: Fed) -> None:
    coord = fed.start(heartbeat_timeout=30.0)  # the loss must come from the revocation
    for n in ("n0", "n1", "n2"):
        fed.node(n)
    fed.wait_connected("n0", "n1", "n2")
    expected = fault_free(Chain(iterations=2), nodes=3)
    # worker: `any` on 2 of 3 nodes, the least loaded first, so n0 and n1 every time.
    swarm_id = submit(fed.user, Chain(iterations=2, sleep=3.0, slow=0, retries=1))
    fed.wait_log(swarm_id, "working: iteration 0 on n1")

    with coord.operator() as operator:
        resp = operator.post("/v1/admin/nodes/n1/revoke")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"node_id": "n1", "revoked": True, "lost_instances": 1}
    refused = httpx.post(
        f"{coord.url}/v1/nodes/heartbeat",
        json={},
        headers={"Authorization": f"Bearer {fed.nodes['n1'].credential().strip()}"},
    )
    assert refused.status_code == 401

    status = fed.wait_done(swarm_id, timeout=90)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (lost,) = status["failures"]  # well before the 30 s heartbeat timeout
    assert (lost["node_id"], lost["iteration"], lost["kind"]) == ("n1", 0, "lost")
    assert "revoked by the operator" in lost["error"]
    rows = results(fed.user, swarm_id, "y", alias="worker", iteration=0)
    assert sorted(r["node_id"] for r in rows) == ["n0", "n2"]  # its retry ran on n2
    for key, value in expected.items():
        assert global_value(fed.user, swarm_id, key) == value
    # The agent tried to enrol again, was refused, and stopped with the reason.
    agent = fed.nodes["n1"].proc
    assert agent.wait(30) == 2
    log = fed.nodes["n1"].log()
    assert "auth.node_revoked" in log or "revoked by the operator" in log
    assert "Traceback" not in log


def test_a_node_rotates_its_credential_while_its_agent_runs(fed: Fed) -> None:
    coord = fed.start(heartbeat_timeout=8.0)
    node = fed.node("n0")
    fed.wait_connected("n0")
    old = node.credential().strip()
    rotated = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "rotate-credential", "--config",
         str(node.folder / "node.toml")],
        capture_output=True, text=True, timeout=60, env={**os.environ, **QUIET},
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert "n0 has a new credential" in rotated.stdout
    new = node.credential().strip()
    assert new != old and new.startswith("n0:")
    assert (node.credential_file.stat().st_mode & 0o777) == 0o600
    assert not (node.folder / "state" / "credential.next").exists()
    stale = httpx.post(
        f"{coord.url}/v1/nodes/heartbeat", json={}, headers={"Authorization": f"Bearer {old}"}
    )
    assert stale.status_code == 401

    # The running agent picks the new credential up and keeps working.
    swarm_id = submit(fed.user, Counter(iterations=1))
    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert node.log().count("enrolled node") == 1
    assert "using the node's new credential" in node.log()
