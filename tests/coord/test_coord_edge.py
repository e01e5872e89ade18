"""The coordinator's HTTP edge against hostile requests, over HTTP to a real process.

No request, authenticated or not, may hold the coordinator's event loop: each route has
a body limit (a few KiB where the body is small by nature), msgpack maps and arrays are
bounded, nesting too deep to decode is refused, and error bodies stay small. Integers in
queries fit the store. The OpenAPI spec says what each route answers. (The same attack
during a running swarm on real node agents: tests/faults/test_fault_hostile_edge.py.)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from deploy_harness import Coordinator, deployment
from swarms import MeanSwarm

from shoal._coord.app import create_app
from shoal._define.compile import compile_swarm
from shoal._store.memory import MemoryStore

pytestmark = pytest.mark.timeout(120)
MSGPACK = {"Content-Type": "application/msgpack"}
#: What the audit sent: 9 MB of JSON, 3 million list items (the answer was 164 MB).
HUGE_ENROL = b'{"join_token":"x","node_id":"a","datasets":[' + b",".join([b"1"] * 3_000_000) + b"]}"
#: An error body quotes a few problems and counts the rest: far below this.
SMALL_ERROR = 4096


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    root = tmp_path_factory.mktemp("edge")
    with deployment(root) as d:
        yield d.coordinator(db=f"sqlite:///{root / 'shoal.db'}")


@pytest.fixture
def user(coord: Coordinator) -> Iterator[httpx.Client]:
    with coord.user() as client:
        yield client
    # Whatever the test sent, the coordinator still answers, and logged no internal error.
    assert httpx.get(f"{coord.url}/v1/health", timeout=5).json()["ok"] is True
    assert "Traceback" not in coord.output()


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:2000]
    assert len(resp.content) < SMALL_ERROR, len(resp.content)
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) == {"code", "message", "hint"}
    return err


class Prober:
    """Times ``GET /v1/health`` every 50 ms in a thread: how long the event loop was
    held while something else was sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=120) as http:
            while not self._stop.wait(0.05):
                t0 = time.monotonic()
                http.get(f"{self.url}/v1/health")
                self.worst = max(self.worst, time.monotonic() - t0)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=130)


def _submit_body() -> dict[str, Any]:
    compiled = compile_swarm(MeanSwarm())
    return {
        "plan": compiled.plan.to_json(),
        "bundles": {d: b.data for d, b in compiled.bundles.items()},
        "seed": 0,
    }


# ------------------------------------------------------------------- bodies
def test_a_huge_unauthenticated_enrolment_is_refused_at_once(coord: Coordinator) -> None:
    url = f"{coord.url}/v1/nodes/enrol"
    json_type = {"Content-Type": "application/json"}

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(HUGE_ENROL), 65536):
            yield HUGE_ENROL[i : i + 65536]

    with Prober(coord.url) as probe:
        t0 = time.monotonic()
        declared = httpx.post(url, content=HUGE_ENROL, headers=json_type, timeout=120)
        streamed = httpx.post(url, content=chunked(), headers=json_type, timeout=120)
        took = time.monotonic() - t0
    for resp in (declared, streamed):
        err = _error(resp, 413)
        assert err["code"] == "request.too_large"
        assert "65536 bytes" in err["message"]
    # Before, this one request held the event loop for 35-40 s (every node was lost).
    assert took < 10, took
    assert probe.worst < 5, probe.worst


def test_validation_errors_are_counted_not_quoted(coord: Coordinator) -> None:
    # Under the enrolment's limit, still thousands of bad items: a few are named.
    body = {"join_token": "x", "node_id": "a", "datasets": [1] * 20_000}
    resp = httpx.post(f"{coord.url}/v1/nodes/enrol", json=body, timeout=60)
    err = _error(resp, 422)
    assert err["code"] == "request.schema"
    assert err["message"].count("Input should be a valid string") == 5
    assert err["message"].endswith("and 19995 more errors")


def test_a_million_key_msgpack_map_is_refused_quickly(
    user: httpx.Client, coord: Coordinator
) -> None:
    body = {**_submit_body(), "bundles": {f"k{i}": b"" for i in range(1_000_000)}}
    data = msgpack.packb(body, use_bin_type=True)
    with Prober(coord.url) as probe:
        t0 = time.monotonic()
        resp = user.post("/v1/swarms", content=data, headers=MSGPACK, timeout=120)
        took = time.monotonic() - t0
    err = _error(resp, 413)
    assert err["code"] == "request.too_many"
    assert "10000 entries" in err["message"]
    assert took < 10, took
    assert probe.worst < 5, probe.worst


def test_deep_nesting_is_refused_with_its_own_code(user: httpx.Client, coord: Coordinator) -> None:
    deep_plan = {**_submit_body(), "plan": "[" * 100_000 + "]" * 100_000}
    resp = user.post("/v1/swarms", content=msgpack.packb(deep_plan), headers=MSGPACK)
    assert _error(resp, 422)["code"] == "request.too_deep"  # was RecursionError -> 500
    deep_msgpack = b"\x81\xa4plan" + b"\x91" * 5000 + b"\xc0"  # {"plan": [[[...]]]}
    resp = user.post("/v1/swarms", content=deep_msgpack, headers=MSGPACK)
    assert _error(resp, 422)["code"] == "request.too_deep"
    deep_json = b'{"join_token": "x", "node_id": "a", "datasets": ' + b"[" * 20_000
    resp = httpx.post(f"{coord.url}/v1/nodes/enrol", content=deep_json)
    assert _error(resp, 422)["code"] == "request.too_deep"


def test_error_messages_are_cut(user: httpx.Client, coord: Coordinator) -> None:
    # A world call naming a 100 kB operation: the message quotes a part of it.
    enrolled = httpx.post(
        f"{coord.url}/v1/nodes/enrol", json={"join_token": coord.join_token, "node_id": "cut"}
    ).json()
    headers = {**MSGPACK, "Authorization": f"Bearer {enrolled['credential']}"}
    call = msgpack.packb({"instance_id": "i", "op": "x" * 100_000, "args": {}})
    resp = httpx.post(f"{coord.url}/v1/world", content=call, headers=headers)
    err = _error(resp, 422)
    assert err["code"] == "world.op"
    assert "characters in all)" in err["message"]


def test_a_node_body_is_not_read_before_authentication(tmp_path: Path) -> None:
    # In process (the real app), to count what it reads: with a forged credential, the
    # 20 MB JSON a `done` carries is refused before a byte of it is read (it was read
    # and parsed on the event loop first, then refused).
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user")
    body = b'{"ok": true, "error": [' + b",".join([b"1"] * 10_000_000) + b"]}"
    pulled: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        pulled.append(1)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = "/v1/instances/s/0/w/0/0/done"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", b"Bearer n1:forged"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"])["error"]["code"] == "auth.node"
    assert pulled == []


# ----------------------------------------------------------------- integers
def test_integers_past_64_bits_in_queries_are_422(user: httpx.Client, coord: Coordinator) -> None:
    swarm_id = user.post(
        "/v1/swarms", content=msgpack.packb(_submit_body()), headers=MSGPACK
    ).json()["swarm_id"]
    huge, top = str(2**83), str(2**63 - 1)
    for path, param in [
        (f"/v1/swarms/{swarm_id}/logs", "after"),
        (f"/v1/swarms/{swarm_id}/logs", "iteration"),
        (f"/v1/swarms/{swarm_id}/logs", "limit"),
        (f"/v1/swarms/{swarm_id}/results/t", "iteration"),
    ]:
        err = _error(user.get(path, params={param: huge}), 422)
        assert err["code"] == "request.schema"
        assert param in err["message"]
        if param != "limit":
            assert user.get(path, params={param: top}).status_code == 200
        assert _error(user.get(path, params={param: "-1"}), 422)["code"] == "request.schema"
    enrolled = httpx.post(
        f"{coord.url}/v1/nodes/enrol", json={"join_token": coord.join_token, "node_id": "ints"}
    ).json()
    node = {"Authorization": f"Bearer {enrolled['credential']}"}
    poll = httpx.get(
        f"{coord.url}/v1/nodes/instructions", params={"wait": 0, "after": huge}, headers=node
    )
    assert "after" in _error(poll, 422)["message"]
    # msgpack carries up to 2**64 - 1; a record number past 2**63 - 1 is refused too.
    record = {"level": "info", "message": "m", "n": 2**64 - 1}
    call = msgpack.packb({"instance_id": "s/0/t/0/0", "op": "log", "args": record})
    world = httpx.post(f"{coord.url}/v1/world", content=call, headers={**node, **MSGPACK})
    assert _error(world, 422)["code"] == "request.schema"
    user.post(f"/v1/swarms/{swarm_id}/stop").raise_for_status()


# ------------------------------------------------------------------ the spec
def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_the_spec_documents_every_error_answer(coord: Coordinator) -> None:
    spec = httpx.get(f"{coord.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's shape, which we never answer
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    assert schemas["ErrorBody"]["properties"]["error"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    ops = {(m, p): op for m, p, op in _operations(spec)}
    for (method, path), op in ops.items():
        for status, doc in op["responses"].items():
            if status.startswith(("4", "5")):
                assert doc["content"]["application/json"]["schema"] == error_ref, (method, path)
        if path.startswith("/v1/") and path != "/v1/health":
            assert "401" in op["responses"], (method, path)
        body = op.get("requestBody", {}).get("content", {})
        for media in body.values():  # every body schema resolves in the components
            ref = media["schema"].get("$ref", "")
            if ref:
                assert ref.rsplit("/", 1)[1] in schemas, (method, path, ref)
        if body:
            assert {"400", "413"} <= set(op["responses"]) or "/blobs/" in path, (method, path)

    def answers(method: str, path: str) -> set[str]:
        return {s for s in ops[(method, path)]["responses"] if s != "200"}

    # Every route that checks a token may also answer 429 (too many failures from the
    # caller's address); enrolment answers 403 for an id the caller does not own.
    assert answers("POST", "/v1/nodes/enrol") == {"400", "401", "403", "413", "422", "429"}
    assert answers("POST", "/v1/instances/{instance_id}/done") == {
        "400",
        "401",
        "403",
        "404",
        "413",
        "422",
        "429",
    }
    assert answers("POST", "/v1/instances/{instance_id}/started") == {"401", "403", "404", "429"}
    assert answers("GET", "/v1/swarms/{swarm_id}") == {"401", "404", "429"}
    assert answers("GET", "/v1/swarms/{swarm_id}/logs") == {"401", "404", "422", "429"}
    assert answers("GET", "/v1/swarms") == {"401", "429"}
    assert answers("POST", "/v1/swarms") == {"400", "401", "413", "422", "429"}
    assert {"507"} <= answers("PUT", "/v1/blobs/{digest}") & answers("POST", "/v1/world")
    assert set(ops[("POST", "/v1/nodes/heartbeat")]["requestBody"]["content"]) == {
        "application/json"
    }
    # Digests: the pattern is in the spec, and a malformed one is a 400.
    for method, path in [
        ("GET", "/v1/bundles/{digest}"),
        ("GET", "/v1/blobs/{digest}"),
        ("PUT", "/v1/blobs/{digest}"),
    ]:
        (param,) = ops[(method, path)]["parameters"]
        assert param["schema"]["pattern"] == "^sha256:[0-9a-f]{64}$", (method, path)
        assert "400" in ops[(method, path)]["responses"]
    # Integers are bounded.
    logs = {
        p["name"]: p["schema"] for p in ops[("GET", "/v1/swarms/{swarm_id}/logs")]["parameters"]
    }
    assert logs["after"]["maximum"] == 2**63 - 1
    assert json.dumps(spec).count("9223372036854775807") >= 4


def test_a_wrong_method_is_405_with_allow(user: httpx.Client, coord: Coordinator) -> None:
    resp = user.delete("/v1/swarms")
    assert _error(resp, 405)["code"] == "http.405"
    assert resp.headers["Allow"] == "GET, POST"
    digest = "sha256:" + "0" * 64
    resp = user.post(f"/v1/blobs/{digest}")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "GET, PUT"
    resp = httpx.get(f"{coord.url}/v1/nodes/heartbeat")
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"
