"""The JSON the coordinator serves did not change when its documents became typed
models (shoal._api): instructions, swarm status, its event stream, nodes, logs, metrics.

The golden documents below are what the coordinator served before; existing node
agents and clients read exactly these keys.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import uvicorn
from helpers import free_port, poll_for

import shoal
from shoal import Module, Swarm, Task
from shoal._api import schemas
from shoal._api.records import SwarmStatus
from shoal._coord import create_app
from shoal._coord.routes_user import status_doc
from shoal._define.compile import compile_swarm
from shoal._store.memory import MemoryStore

pytestmark = pytest.mark.timeout(120)


class _One(Swarm):
    max_iterations = 1

    def __init__(self) -> None:
        module = Module("def main():\n    pass\n", name="t", datasets=["d"])
        self.t = Task(module, alias="t", timeout=30)

    def execute(self) -> Task:
        return self.t()


def _golden_run(swarm_id: str, iid: str, module: str, seq: int) -> dict[str, Any]:
    return {
        "kind": "run",
        "swarm_id": swarm_id,
        "instance_id": iid,
        "alias": "t",
        "iteration": 0,
        "attempt": 0,
        "module": module,
        "datasets": ["d"],
        "image": "python",
        "timeout_s": 30.0,
        "requirements": [],
        "cpu": 0.0,
        "memory": 0,
        "gpu": 0,
        "global_versions": {},
        "seq": seq,
        "network": None,
        "fresh_process": False,
    }


class _App:
    def __init__(self, url: str, app: Any) -> None:
        self.url, self.app = url, app
        self.http = httpx.Client(base_url=url, timeout=10)
        enrolled = self.http.post(
            "/v1/nodes/enrol", json={"join_token": "join", "node_id": "n1", "datasets": ["d"]}
        )
        self.node = {"Authorization": f"Bearer {enrolled.json()['credential']}"}
        self.user = {"Authorization": "Bearer user"}
        beat = {"datasets": ["d"], "gpu": False, "images": ["python"]}
        self.http.post("/v1/nodes/heartbeat", json=beat, headers=self.node).raise_for_status()

    def submit(self) -> tuple[str, str]:
        compiled = compile_swarm(_One())
        body = {
            "plan": compiled.plan.to_json(),
            "bundles": {d: b.data for d, b in compiled.bundles.items()},
        }
        headers = {**self.user, "Content-Type": "application/msgpack"}
        resp = self.http.post("/v1/swarms", content=msgpack.packb(body), headers=headers)
        # A run instruction names the module's bundle (its digest), not its plan key.
        (module,) = compiled.plan.modules.values()
        return resp.json()["swarm_id"], module.digest

    def instructions(self) -> list[dict[str, Any]]:
        resp = self.http.get("/v1/nodes/instructions", params={"wait": 2}, headers=self.node)
        items: list[dict[str, Any]] = resp.json()
        return items


@pytest.fixture
def app(tmp_path: Path) -> Iterator[_App]:
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user", heartbeat_timeout_s=30)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        poll_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
        assert server.started, "uvicorn stopped before it started"
        running = _App(f"http://127.0.0.1:{port}", app)
        yield running
        running.http.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_run_and_cancel_instructions_are_the_json_they_were(app: _App) -> None:
    swarm_id, module = app.submit()
    (run,) = app.instructions()
    iid = f"{swarm_id}/0/t/0/0"
    assert run == _golden_run(swarm_id, iid, module, run["seq"])
    assert list(run) == list(_golden_run(swarm_id, iid, module, 0))  # key order too
    app.http.post(f"/v1/swarms/{swarm_id}/stop", headers=app.user).raise_for_status()
    (cancel,) = app.instructions()
    assert cancel == {
        "kind": "cancel",
        "instance_id": iid,
        "reason": cancel["reason"],
        "seq": cancel["seq"],
    }
    assert isinstance(cancel["reason"], str) and cancel["reason"]
    assert cancel["seq"] > run["seq"]
    # The agent reads them back into the same models.
    assert isinstance(schemas.INSTRUCTION.validate_python(run), schemas.RunInstruction)
    assert isinstance(schemas.INSTRUCTION.validate_python(cancel), schemas.CancelInstruction)


def test_the_golden_instructions_round_trip_through_the_models() -> None:
    golden_run = _golden_run("s", "s/0/t/0/0", "sha256:" + "0" * 64, 7)
    golden_cancel = {"kind": "cancel", "instance_id": "s/0/t/0/0", "reason": "stop", "seq": 8}
    both = schemas.Instructions.model_validate([golden_run, golden_cancel])
    assert json.loads(both.model_dump_json()) == [golden_run, golden_cancel]


def test_status_nodes_logs_and_metrics_serve_the_documents_they_did(app: _App) -> None:
    swarm_id, _ = app.submit()
    (run,) = app.instructions()
    iid = run["instance_id"]
    world = {"instance_id": iid, "op": "log", "args": {"level": "info", "message": "hi"}}
    headers = {**app.node, "Content-Type": "application/msgpack"}
    app.http.post("/v1/world", content=msgpack.packb(world), headers=headers)
    world = {"instance_id": iid, "op": "metric", "args": {"name": "m", "value": 2, "step": 0}}
    app.http.post("/v1/world", content=msgpack.packb(world), headers=headers)
    done = {"ok": False, "error": "boom", "traceback": "tb", "kind": "error"}
    app.http.post(f"/v1/instances/{iid}/done", json=done, headers=app.node).raise_for_status()

    served = app.http.get(f"/v1/swarms/{swarm_id}", headers=app.user).json()
    # What the route builds from the coordinator's report is what it serves.
    doc = status_doc(app.app.state.coord.status(swarm_id)).to_dict()
    assert served == json.loads(json.dumps(doc))
    assert served == {
        "swarm_id": swarm_id,
        "name": "_One",
        "status": "failed",
        "iteration": 0,
        "reason": served["reason"],
        "created": served["created"],
        "failures": [
            {
                "instance_id": iid,
                "alias": "t",
                "node_id": "n1",
                "iteration": 0,
                "attempt": 0,
                "kind": "error",
                "error": "boom",
                "traceback": "tb",
            }
        ],
        "tasks": {
            "t": {
                "scheduled": 1,
                "running": 0,
                "succeeded": 0,
                "failed": 1,
                "module": "t",
                "version": None,
            }
        },
        "waiting": {},
        "running": [],  # live instances, oldest first (none: it has ended)
    }
    assert isinstance(served["created"], float) and "boom" in served["reason"]
    assert list(served) == [f for f in SwarmStatus.__dataclass_fields__]
    with app.http.stream("GET", f"/v1/swarms/{swarm_id}/events", headers=app.user) as s:
        (event,) = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: ")]
    assert event == served
    (listed,) = app.http.get("/v1/swarms", headers=app.user).json()
    assert listed == {k: served[k] for k in listed} and set(listed) == set(served) - {
        "failures",
        "tasks",
        "waiting",
        "running",
    }

    (node,) = app.http.get("/v1/nodes", headers=app.user).json()
    assert node == {
        "node_id": "n1",
        "connected": True,
        "datasets": ["d"],
        "gpu": False,
        "images": ["python"],
        "last_seen": node["last_seen"],
        "running": 0,
        "cpu": None,
        "memory": None,
        "gpus": None,
        "gpu_memory": None,
    }
    (log,) = app.http.get(f"/v1/swarms/{swarm_id}/logs", headers=app.user).json()
    assert log == {
        "seq": log["seq"],
        "node_id": "n1",
        "alias": "t",
        "iteration": 0,
        "instance_id": iid,
        "level": "info",
        "message": "hi",
        "time": log["time"],
        "module": "t",
        "version": None,
    }
    (metric,) = app.http.get(f"/v1/swarms/{swarm_id}/metrics", headers=app.user).json()
    assert metric == {
        "name": "m",
        "value": 2.0,
        "step": 0,
        "node_id": "n1",
        "alias": "t",
        "iteration": 0,
        "time": metric["time"],
    }

    # The client reads the same documents into the typed records.
    with shoal.Client(app.url, "user") as client:
        status = client.status(swarm_id)
        assert status.to_dict() == served
        (failure,) = status.failures
        assert (failure.node_id, failure.kind, failure.traceback) == ("n1", "error", "tb")
        assert [n.to_dict() for n in client.nodes()] == [node]
        assert [r.to_dict() for r in client.logs(swarm_id)] == [log]
        assert [m.to_dict() for m in client.metrics(swarm_id, frame=False)] == [metric]
