"""Least privilege for data (issue #14, point 3), with a real coordinator and two real
node agents on loopback: a task reads only its upstream results, a node reads only the
blobs it was given (never another swarm's), bundles only through the bundles route, and
every state file is private to the service's user."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from deploy_harness import (
    Coordinator,
    deployment,
    results,
    submit,
    wait_nodes,
    wait_status,
)
from helpers import task_module

from shoal import Swarm, Task
from shoal._define.compile import compile_swarm
from shoal._store.sql import SQLStore

pytestmark = pytest.mark.timeout(180)

PROCESS = 'executor = "process"'
BIG = 200_000  # float64s: 1.6 MB, over the agent's 1 MiB inline limit: the value is a blob

WRITER = """
# Each task its own bytes (a node holds the blobs it uploaded).
self.world.results.add("v", np.full(BIG, 7.0 if self.world.alias == "w" else 8.0))
self.world.results.add("small", 1)
"""

READER = """
found = {}
for alias in ("w", "side"):
    try:
        got = self.world.results.select("small", alias=alias)
        found[alias] = "allowed: " + ",".join(sorted(got))
    except Exception as e:
        found[alias] = f"denied: {getattr(e, 'code', '?')}: {e}"
(big,) = self.world.results.select("v").values()  # fetched into this node's cache
found["big"] = float(big.sum())
self.world.results.add("found", found)
"""


def _module(body: str, cls: str) -> Any:
    return task_module(f"BIG = {BIG}\n" + body, cls, imports="import numpy as np")


class Upstream(Swarm):
    """``w`` (node a) -> ``r`` (node a), and ``side`` (node b) on another branch."""

    def __init__(self) -> None:
        self.max_iterations = 1
        self.w = Task(_module(WRITER, "W"), alias="w", specified_ids=["lp-a"])
        self.side = Task(_module(WRITER, "Side"), alias="side", specified_ids=["lp-b"])
        self.r = Task(_module(READER, "R"), alias="r", specified_ids=["lp-a"])

    def execute(self) -> list[Task]:
        return [self.r(self.w()), self.side()]


STEAL = """
wire = {"blob": DIGEST, "length": LENGTH}
try:
    self.world._ctx.channel.request("globals.set", {"key": "stolen", "value": wire})
    self.world.results.add("steal", "allowed")
except Exception as e:
    self.world.results.add("steal", f"denied: {getattr(e, 'code', '?')}: {e}")
"""


class Thief(Swarm):
    """One task on node b that names another swarm's blob as its own value."""

    def __init__(self, digest: str, length: int) -> None:
        self.max_iterations = 1
        body = f"DIGEST = {digest!r}\nLENGTH = {length}\n" + STEAL
        self.t = Task(task_module(body, "Thief"), alias="t", specified_ids=["lp-b"])

    def execute(self) -> Task:
        return self.t()


@dataclass
class Site:
    coord: Coordinator
    nodes: dict[str, Path]  # node id -> its folder (state in folder / "state")
    swarm_id: str
    status: dict[str, Any]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("privilege")
    state = root / "coord"
    # What an older coordinator left: a folder 0755 and a database 0644.
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    SQLStore(f"sqlite:///{state / 'shoal.db'}").close()
    (state / "shoal.db").chmod(0o644)
    with deployment(root) as d:
        coord = d.coordinator(state=state)
        nodes = {n: d.node(coord, n, extra=PROCESS)[1] for n in ("lp-a", "lp-b")}
        with coord.user() as user:
            wait_nodes(user, list(nodes))
            swarm_id = submit(user, Upstream())
            status = wait_status(user, swarm_id, timeout=90)
        yield Site(coord, nodes, swarm_id, status)


@pytest.fixture
def user(site: Site) -> Iterator[httpx.Client]:
    with site.coord.user() as client:
        yield client


def node_client(site: Site, node_id: str) -> httpx.Client:
    credential = (site.nodes[node_id] / "state" / "credential").read_text().strip()
    return httpx.Client(
        base_url=site.coord.url, headers={"Authorization": f"Bearer {credential}"}, timeout=30
    )


def _wire(user: httpx.Client, swarm_id: str, tag: str, alias: str) -> dict[str, Any]:
    resp = user.get(f"/v1/swarms/{swarm_id}/results/{tag}", params={"alias": alias})
    assert resp.status_code == 200, resp.text
    (row,) = msgpack.unpackb(resp.content, raw=False)
    wire: dict[str, Any] = row["value"]
    return wire


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    error: dict[str, Any] = resp.json()["error"]
    return error


def test_a_task_cannot_read_a_non_upstream_result(site: Site, user: httpx.Client) -> None:
    assert site.status["status"] == "succeeded", json.dumps(site.status, indent=1)
    (row,) = results(user, site.swarm_id, "found", alias="r")
    found = row["value"]
    assert found["w"] == "allowed: lp-a", found
    assert found["big"] == BIG * 7.0
    denied = found["side"]
    assert denied.startswith("denied: world.results_forbidden: "), denied
    assert "task 'r' (iteration 0) may not read the results of task 'side'" in denied
    assert "(here: 'w')" in denied
    # The owner reads every task's results.
    assert [r["value"] for r in results(user, site.swarm_id, "small", alias="side")] == [1]


def test_a_node_cannot_fetch_another_swarms_blob(site: Site, user: httpx.Client) -> None:
    wire = _wire(user, site.swarm_id, "v", "w")  # written by lp-a, read by r on lp-a
    digest = wire["blob"]
    assert user.get(f"/v1/blobs/{digest}").status_code == 200  # the owner
    with node_client(site, "lp-a") as a:
        got = a.get(f"/v1/blobs/{digest}")
        assert got.status_code == 200 and len(got.content) == wire["length"]
    with node_client(site, "lp-b") as b:  # it ran "side" of the same swarm: not given it
        err = _error(b.get(f"/v1/blobs/{digest}"), 404)
    assert err["code"] == "blob.unknown"
    assert err["message"] == f"no blob {digest} that node 'lp-b' may read"
    assert "the values its instances were given" in err["hint"]

    # Naming the blob in a world value does not make it lp-b's: the claim is refused.
    thief = submit(user, Thief(digest, wire["length"]))
    status = wait_status(user, thief, timeout=60)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (row,) = results(user, thief, "steal", alias="t")
    assert row["value"].startswith("denied: blob.not_held: "), row["value"]
    assert "node 'lp-b' sent a value in blob" in row["value"]
    with node_client(site, "lp-b") as b:
        _error(b.get(f"/v1/blobs/{digest}"), 404)
    resp = user.get(f"/v1/swarms/{thief}/globals/stolen")
    assert _error(resp, 404)["code"] == "global.unknown"


def test_a_node_named_user_is_not_the_user(site: Site, user: httpx.Client) -> None:
    digest = _wire(user, site.swarm_id, "v", "w")["blob"]
    enrol = httpx.post(
        f"{site.coord.url}/v1/nodes/enrol",
        json={"join_token": site.coord.join_token, "node_id": "user"},
    )
    if enrol.status_code != 200:  # the id may be reserved: then nothing to show
        assert 400 <= enrol.status_code < 500, enrol.text
        return
    headers = {"Authorization": f"Bearer {enrol.json()['credential']}"}
    with httpx.Client(base_url=site.coord.url, headers=headers, timeout=30) as impostor:
        err = _error(impostor.get(f"/v1/blobs/{digest}"), 404)
    assert err["message"] == f"no blob {digest} that node 'user' may read"


def test_the_bundles_route_refuses_a_value_digest(site: Site, user: httpx.Client) -> None:
    value = _wire(user, site.swarm_id, "v", "w")["blob"]
    plan = compile_swarm(Upstream()).plan  # deterministic: the plan that was submitted
    bundle = next(m.digest for m in plan.modules.values() if m.name == "w")
    with node_client(site, "lp-a") as a:
        err = _error(a.get(f"/v1/bundles/{value}"), 404)
        assert err["code"] == "bundle.unknown"
        assert err["message"] == f"no bundle {value} that node 'lp-a' may read"
        assert "values are read with GET /v1/blobs" in err["hint"]
        # A node fetches a bundle while it runs the module (none runs now), and never
        # through the blobs route.
        assert _error(a.get(f"/v1/bundles/{bundle}"), 404)["code"] == "bundle.unknown"
        assert _error(a.get(f"/v1/blobs/{bundle}"), 404)["code"] == "blob.unknown"
    assert user.get(f"/v1/bundles/{bundle}").status_code == 200  # the owner's swarm
    assert _error(user.get(f"/v1/bundles/{value}"), 404)["code"] == "bundle.unknown"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_to_the_service_user(site: Site, user: httpx.Client) -> None:
    state = site.coord.state
    assert _mode(state) == 0o700  # tightened from 0755
    db = state / "shoal.db"
    assert _mode(db) == 0o600  # tightened from 0644
    for name in ("shoal.db-wal", "shoal.db-shm", "join-token", "user-token"):
        if (state / name).exists():
            assert _mode(state / name) == 0o600, name
    blobs = state / "blobs"
    assert _mode(blobs) == 0o700 and _mode(blobs / "tmp") == 0o700
    stored = [p for p in blobs.rglob("*") if p.is_file()]
    assert stored, "the swarm stored no blob"  # written after the start: 0600 too
    assert {_mode(p) for p in stored} == {0o600}
    assert {_mode(p) for p in blobs.iterdir() if p.is_dir()} == {0o700}

    node = site.nodes["lp-a"] / "state"
    assert _mode(node) == 0o700 and _mode(node / "credential") == 0o600
    for sub in ("cache", "cache/blobs", "cache/bundles", "work", "run"):
        assert _mode(node / sub) == 0o700, sub
    cached = list((node / "cache" / "blobs").iterdir())
    assert cached, "node lp-a cached no value"
    assert {_mode(p) for p in cached} == {0o600}
