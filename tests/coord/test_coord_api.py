"""The coordinator's HTTP API at its edges: auth, schemas, sizes, unknown ids.

Nodes here are played by the test over HTTP, so every answer is checked exactly; after
each rejected request the coordinator must still serve.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
from deploy_harness import Coordinator, Deployment, deployment
from swarms import MeanSwarm

import shoal
from shoal._define.compile import compile_swarm

pytestmark = pytest.mark.timeout(120)
MSGPACK = {"Content-Type": "application/msgpack"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Coordinator]]:
    root = tmp_path_factory.mktemp("api")
    with deployment(root) as d:
        coord = d.coordinator(db=f"sqlite:///{root / 'shoal.db'}", max_request_mb=1.0)
        yield d, coord


@pytest.fixture
def coord(deployed: tuple[Deployment, Coordinator]) -> Iterator[Coordinator]:
    yield deployed[1]
    # Whatever the test did, the coordinator still answers.
    assert httpx.get(f"{deployed[1].url}/v1/health", timeout=5).json()["ok"] is True


@pytest.fixture
def user(coord: Coordinator) -> Iterator[httpx.Client]:
    with coord.user() as client:
        yield client


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) == {"code", "message", "hint"}
    return err


def _submit_body(plan: str | None = None, bundles: dict[str, bytes] | None = None) -> bytes:
    compiled = compile_swarm(MeanSwarm())
    body = {
        "plan": compiled.plan.to_json() if plan is None else plan,
        "bundles": {d: b.data for d, b in compiled.bundles.items()} if bundles is None else bundles,
        "seed": 0,
    }
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def _node(coord: Coordinator, node_id: str) -> httpx.Client:
    resp = httpx.post(
        f"{coord.url}/v1/nodes/enrol",
        json={"join_token": coord.join_token, "node_id": node_id, "datasets": ["numbers"]},
    )
    assert resp.status_code == 200, resp.text
    credential = resp.json()["credential"]
    client = httpx.Client(
        base_url=coord.url, headers={"Authorization": f"Bearer {credential}"}, timeout=30
    )
    client.post("/v1/nodes/heartbeat", json={"datasets": ["numbers"]}).raise_for_status()
    return client


# --------------------------------------------------------------------------- users
def test_health_and_openapi_need_no_token(coord: Coordinator) -> None:
    assert httpx.get(f"{coord.url}/v1/health").json()["ok"] is True
    spec = httpx.get(f"{coord.url}/openapi.json").json()
    assert "/v1/swarms" in spec["paths"] and "/v1/world" in spec["paths"]


def test_user_routes_reject_missing_or_wrong_tokens(coord: Coordinator) -> None:
    assert _error(httpx.get(f"{coord.url}/v1/swarms"), 401)["code"] == "auth.missing"
    bad = {"Authorization": "Bearer nope"}
    assert _error(httpx.get(f"{coord.url}/v1/swarms", headers=bad), 401)["code"] == "auth.user"
    join = {"Authorization": f"Bearer {coord.join_token}"}
    _error(httpx.get(f"{coord.url}/v1/nodes", headers=join), 401)


def test_malformed_plans_and_bundles_are_rejected(user: httpx.Client) -> None:
    def post(body: bytes) -> httpx.Response:
        return user.post("/v1/swarms", content=body, headers=MSGPACK)

    assert _error(post(_submit_body(plan="{not json")), 422)["code"] == "plan.json"
    schema = json.loads(compile_swarm(MeanSwarm()).plan.to_json())
    schema["tasks"][0]["retries"] = -1
    assert _error(post(_submit_body(plan=json.dumps(schema))), 422)["code"] == "plan.schema"
    digest = next(iter(compile_swarm(MeanSwarm()).bundles))
    wrong = _error(post(_submit_body(bundles={digest: b"other bytes"})), 422)
    assert wrong["code"] == "swarm.bundle"
    missing = _error(post(_submit_body(bundles={})), 400)
    assert missing["code"] == "swarm.bundle_missing"
    assert _error(post(b"\xc1garbage"), 400)["code"] == "request.msgpack"
    not_a_map = msgpack.packb([1, 2, 3])
    assert _error(post(not_a_map), 422)["code"] == "request.schema"
    as_json = user.post("/v1/swarms", json={"plan": "{}"})
    assert _error(as_json, 400)["code"] == "request.content_type"


def test_a_bad_plan_is_refused_before_anything_is_stored(user: httpx.Client) -> None:
    """Issue #14, point 5: a global that is not base64 answered 500 and left an orphan
    swarm ``running`` at iteration -1; an alias with a path in it is refused too."""
    before = user.get("/v1/swarms").json()
    for field, value, needle in (
        ("globals", {"g": {"$codec": "not base64!"}}, "global 'g' is not valid base64"),
        ("tasks", None, "tasks.0.alias"),
    ):
        doc = json.loads(compile_swarm(MeanSwarm()).plan.to_json())
        if value is None:
            doc[field][0]["alias"] = "../evil"
        else:
            doc[field] = value
        body = _submit_body(plan=json.dumps(doc))
        err = _error(user.post("/v1/swarms", content=body, headers=MSGPACK), 422)
        assert err["code"] == "plan.schema" and needle in err["message"]
    assert user.get("/v1/swarms").json() == before


def test_unknown_swarm_ids_are_404(user: httpx.Client) -> None:
    for path in ("", "/logs", "/metrics", "/events", "/globals/k", "/results/t"):
        assert _error(user.get(f"/v1/swarms/nope{path}"), 404)["code"] == "swarm.unknown"
    _error(user.post("/v1/swarms/nope/stop"), 404)
    _error(user.get("/v1/no/such/route"), 404)


def test_oversized_requests_get_413_and_blobs_are_exempt(
    coord: Coordinator, user: httpx.Client
) -> None:
    big = b"\x00" * (2 * 1024 * 1024)  # over the 1 MiB limit of this coordinator
    err = _error(user.post("/v1/swarms", content=big, headers=MSGPACK), 413)
    assert err["code"] == "request.too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        for _ in range(32):
            yield b"\x00" * 65536

    _error(user.post("/v1/swarms", content=chunks(), headers=MSGPACK), 413)
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    resp = user.put(f"/v1/blobs/{digest}", content=big)
    assert resp.json() == {"digest": digest, "length": len(big)}
    assert user.get(f"/v1/blobs/{digest}").content == big
    bad = _error(user.put(f"/v1/blobs/{digest}", content=b"not it"), 400)
    assert bad["code"] == "blob.mismatch"
    _error(user.get("/v1/blobs/sha256:" + "0" * 64), 404)
    _error(user.get("/v1/blobs/not-a-digest"), 400)


# --------------------------------------------------------------------------- nodes
def test_enrolment_needs_the_join_token_and_a_valid_node_id(coord: Coordinator) -> None:
    url = f"{coord.url}/v1/nodes/enrol"
    bad = httpx.post(url, json={"join_token": "wrong", "node_id": "x"})
    assert _error(bad, 401)["code"] == "auth.join"
    user_token = httpx.post(url, json={"join_token": coord.user_token, "node_id": "x"})
    _error(user_token, 401)
    odd = httpx.post(url, json={"join_token": coord.join_token, "node_id": "a/b"})
    assert _error(odd, 422)["code"] == "request.schema"
    extra = httpx.post(url, json={"join_token": coord.join_token, "node_id": "x", "admin": 1})
    _error(extra, 422)


def test_nodes_only_act_on_their_own_instances(coord: Coordinator, user: httpx.Client) -> None:
    a, b = _node(coord, "api-a"), _node(coord, "api-b")
    try:
        resp = user.post("/v1/swarms", content=_submit_body(), headers=MSGPACK)
        swarm_id = resp.json()["swarm_id"]
        runs = a.get("/v1/nodes/instructions", params={"wait": 10}).json()
        mine = [r for r in runs if r["kind"] == "run" and r["swarm_id"] == swarm_id]
        assert mine and mine[0]["alias"] == "worker" and mine[0]["datasets"] == ["numbers"]
        iid = mine[0]["instance_id"]

        forged = httpx.post(
            f"{coord.url}/v1/instances/{iid}/started",
            headers={"Authorization": "Bearer api-a:not-the-secret"},
        )
        assert _error(forged, 401)["code"] == "auth.node"
        assert _error(b.post(f"/v1/instances/{iid}/started"), 403)["code"] == "auth.forbidden"
        done = {"ok": True}
        _error(b.post(f"/v1/instances/{iid}/done", json=done), 403)
        world = msgpack.packb({"instance_id": iid, "op": "globals.keys", "args": {}})
        _error(b.post("/v1/world", content=world, headers=MSGPACK), 403)
        _error(a.post("/v1/instances/nope/0/w/0/0/started"), 404)

        assert a.post(f"/v1/instances/{iid}/started").json() == {"ok": True}
        reply = a.post("/v1/world", content=world, headers=MSGPACK)
        assert msgpack.unpackb(reply.content) == {"ok": ["sleep"]}
        bad_args = msgpack.packb({"instance_id": iid, "op": "globals.get", "args": {"k": 1}})
        _error(a.post("/v1/world", content=bad_args, headers=MSGPACK), 422)
        unknown = msgpack.packb({"instance_id": iid, "op": "rm -rf", "args": {}})
        assert _error(a.post("/v1/world", content=unknown, headers=MSGPACK), 422)["code"] == (
            "world.op"
        )
        ghost = {"tag": "x", "value": {"blob": "sha256:" + "1" * 64, "length": 3}}
        ghost_req = msgpack.packb({"instance_id": iid, "op": "results.add", "args": ghost})
        assert _error(a.post("/v1/world", content=ghost_req, headers=MSGPACK), 400)["code"] == (
            "world.blob"
        )
        log = {"op": "log", "args": {"level": "info", "message": "hi"}}
        batch = {"instance_id": iid, "op": "batch", "args": {"calls": [log] * 3}}
        ok = a.post("/v1/world", content=msgpack.packb(batch), headers=MSGPACK)
        assert msgpack.unpackb(ok.content) == {"ok": None}
        assert len(user.get(f"/v1/swarms/{swarm_id}/logs").json()) == 3
        batch["args"] = {"calls": [log] * 1001}
        _error(a.post("/v1/world", content=msgpack.packb(batch), headers=MSGPACK), 422)
        batch["args"] = {"calls": [{"op": "globals.set", "args": {"key": "k"}}]}
        _error(a.post("/v1/world", content=msgpack.packb(batch), headers=MSGPACK), 422)
        local = msgpack.packb({"instance_id": iid, "op": "local.dataset", "args": {"name": "x"}})
        _error(a.post("/v1/world", content=local, headers=MSGPACK), 422)

        assert user.post(f"/v1/swarms/{swarm_id}/stop").json() == {"ok": True}
        status = user.get(f"/v1/swarms/{swarm_id}").json()
        assert status["status"] == "stopped"
        cancels = a.get("/v1/nodes/instructions", params={"wait": 5}).json()
        assert any(c["kind"] == "cancel" and c["instance_id"] == iid for c in cancels)
        # The engine's story of the instance, through the API and shoal.Client.
        story = user.get(f"/v1/instances/{iid}/story").json()
        assert story["instance_id"] == iid
        lines = story["story"]
        assert "scheduled on node api-a" in lines[0] and "InstanceStarted: started" in lines[1]
        assert "cancelled" in lines[-1], lines
        with shoal.Client(coord.url, token=coord.user_token) as client:
            assert client.story(iid) == lines
            with pytest.raises(shoal.ShoalError, match="unknown instance"):
                client.story(f"{swarm_id}/9/worker/0/0")
        unknown_story = user.get(f"/v1/instances/{swarm_id}/9/worker/0/0/story")
        assert _error(unknown_story, 404)["code"] == "instance.unknown"
        _error(a.get(f"/v1/instances/{iid}/story"), 401)  # a user route, not a node's
        # A report after the swarm ended is acknowledged and ignored; so is a repeat.
        assert a.post(f"/v1/instances/{iid}/done", json=done).json() == {"ok": True}
        assert a.post(f"/v1/instances/{iid}/done", json=done).json() == {"ok": True}
        ended = msgpack.unpackb(a.post("/v1/world", content=world, headers=MSGPACK).content)
        assert ended["error"]["code"] == "world.ended"
    finally:
        a.close()
        b.close()


def test_a_done_report_carries_the_last_results_of_its_instance(
    coord: Coordinator, user: httpx.Client
) -> None:
    """An agent sends a worker's last ``results.add`` with its ``done`` (msgpack): the
    result is stored before the success is recorded; a call that fails fails the
    instance with the call's reason (as it would have on its own); a repeat is
    acknowledged and runs nothing again; only deferrable operations may ride along."""
    a = _node(coord, "api-done")
    try:
        swarm_id = user.post("/v1/swarms", content=_submit_body(), headers=MSGPACK).json()[
            "swarm_id"
        ]
        runs = a.get("/v1/nodes/instructions", params={"wait": 10}).json()
        iid = next(r["instance_id"] for r in runs if r.get("swarm_id") == swarm_id)
        done_url = f"/v1/instances/{iid}/done"

        def done(body: dict[str, Any]) -> httpx.Response:
            return a.post(done_url, content=msgpack.packb(body), headers=MSGPACK)

        add = {"op": "results.add", "args": {"tag": "sum", "value": {"inline": b"\x01\x02"}}}
        not_deferrable = {"op": "globals.set", "args": {"key": "k", "value": {"inline": b"x"}}}
        err = _error(done({"ok": True, "calls": [not_deferrable]}), 422)
        assert "'globals.set' cannot be sent with a done report" in err["message"]
        _error(done({"ok": True, "calls": [add] * 65}), 422)  # MAX_DONE_CALLS
        status = user.get(f"/v1/swarms/{swarm_id}").json()
        assert status["status"] == "running"  # nothing above was recorded

        assert done({"ok": True, "started": True, "calls": [add]}).json() == {"ok": True}
        stored = msgpack.unpackb(
            user.get(f"/v1/swarms/{swarm_id}/results/sum", params={"iteration": 0}).content
        )
        assert [(r["alias"], r["node_id"], r["value"]) for r in stored] == [
            ("worker", "api-done", {"inline": b"\x01\x02"})
        ]
        story = user.get(f"/v1/instances/{iid}/story").json()["story"]
        assert "InstanceSucceeded" in story[-1], story
        # A repeat (its answer was lost): acknowledged; its call does not run again.
        other = {"op": "results.add", "args": {"tag": "sum", "value": {"inline": b"\x09"}}}
        assert done({"ok": True, "calls": [other]}).json() == {"ok": True}
        again = msgpack.unpackb(
            user.get(f"/v1/swarms/{swarm_id}/results/sum", params={"iteration": 0}).content
        )
        assert [r["value"] for r in again] == [{"inline": b"\x01\x02"}]

        user.post(f"/v1/swarms/{swarm_id}/stop")

        # Another swarm's worker: a call that fails fails it, with the call's reason.
        swarm_id = user.post("/v1/swarms", content=_submit_body(), headers=MSGPACK).json()[
            "swarm_id"
        ]
        runs = a.get("/v1/nodes/instructions", params={"wait": 10}).json()
        iid = next(r["instance_id"] for r in runs if r.get("swarm_id") == swarm_id)
        bad_tag = {"op": "results.add", "args": {"tag": "", "value": {"inline": b"x"}}}
        body = {"ok": True, "started": True, "calls": [bad_tag, add]}
        resp = a.post(f"/v1/instances/{iid}/done", content=msgpack.packb(body), headers=MSGPACK)
        assert resp.json() == {"ok": True}
        lines = user.get(f"/v1/instances/{iid}/story").json()["story"]
        assert "InstanceFailed" in lines[-1], lines
        assert any("results.add failed: result tag '' is not a non-empty str" in x for x in lines)
        status = user.get(f"/v1/swarms/{swarm_id}").json()
        assert status["status"] == "failed" and "results.add failed" in status["reason"], status
        # The calls after the failing one ran, as they would have on their own.
        kept = user.get(f"/v1/swarms/{swarm_id}/results/sum", params={"iteration": 0}).content
        assert [r["node_id"] for r in msgpack.unpackb(kept)] == ["api-done"]
    finally:
        user.post(f"/v1/swarms/{swarm_id}/stop")
        a.close()


def test_instructions_long_poll_is_bounded(coord: Coordinator) -> None:
    node = _node(coord, "api-idle")
    try:
        assert node.get("/v1/nodes/instructions", params={"wait": 0.3}).json() == []
        too_long = node.get("/v1/nodes/instructions", params={"wait": 3600})
        _error(too_long, 422)
    finally:
        node.close()


def test_events_stream_ends_with_the_final_status(user: httpx.Client, coord: Coordinator) -> None:
    resp = user.post("/v1/swarms", content=_submit_body(), headers=MSGPACK)
    swarm_id = resp.json()["swarm_id"]
    user.post(f"/v1/swarms/{swarm_id}/stop").raise_for_status()
    with user.stream("GET", f"/v1/swarms/{swarm_id}/events") as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1]["status"] == "stopped"
    assert events[-1]["swarm_id"] == swarm_id


def test_swarm_list_and_status_shape(user: httpx.Client) -> None:
    resp = user.post("/v1/swarms", content=_submit_body(), headers=MSGPACK)
    swarm_id = resp.json()["swarm_id"]
    listed = {s["swarm_id"]: s for s in user.get("/v1/swarms").json()}
    assert listed[swarm_id]["name"] == "mean"
    status = user.get(f"/v1/swarms/{swarm_id}").json()
    assert set(status) >= {"failures", "tasks", "reason", "created", "iteration"}
    assert set(status["tasks"]) == {"worker", "aggregator"}
    user.post(f"/v1/swarms/{swarm_id}/stop").raise_for_status()
