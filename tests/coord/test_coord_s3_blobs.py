"""A large result crosses a real deployment whose blobs live in S3 (moto's server).

Coordinator and node are real processes on loopback; the coordinator runs with
``--blobs s3://bucket/prefix`` and finds moto's endpoint and throwaway credentials in
the usual AWS environment variables.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from deploy_harness import deployment, submit, wait_nodes, wait_status
from helpers import task_module

from shoal import Swarm, Task
from shoal._codec import decode

MiB = 1 << 20
SECRET = "s3cret-shoal-e2e-7c1d"  # must never appear in a log

WORKER = """
n = int(self.world.globals["n"])
big = np.arange(n // 8, dtype=np.int64)
self.world.results.add("big", big)
"""

AGGREGATOR = """
big = list(self.world.results.select("big").values())[0]
self.world.globals["sha"] = hashlib.sha256(big.tobytes()).hexdigest()
self.world.globals["nbytes"] = int(big.nbytes)
"""


class BigResult(Swarm):
    """One node makes an ``n``-byte array result; another task reads it back."""

    def __init__(self, n: int) -> None:
        self.name = "big"
        self.max_iterations = 1
        self.set_global("n", n)
        imports = "import hashlib\nimport numpy as np"
        self.worker = Task(task_module(WORKER, "W", imports=imports), method="all", alias="w")
        self.aggregator = Task(task_module(AGGREGATOR, "A", imports=imports), method="any")

    def execute(self) -> Task:
        return self.aggregator(self.worker())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # Child processes (the coordinator) inherit these.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any credentials
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        boto3.client("s3").create_bucket(Bucket="shoal")
        yield "s3://shoal/deploy/blobs"
    finally:
        server.stop()


def _run(tmp_path: Path, s3_url: str, n: int) -> None:
    import boto3

    want = hashlib.sha256(np.arange(n // 8, dtype=np.int64).tobytes()).hexdigest()
    with deployment(tmp_path) as d:
        coord = d.coordinator(extra=["--blobs", s3_url])
        d.node(coord, "n0")
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, ["n0"])
        swarm_id = submit(user, BigResult(n))
        status = wait_status(user, swarm_id, timeout=900)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        got = user.get(f"/v1/swarms/{swarm_id}/globals/sha")
        assert got.status_code == 200
        import msgpack

        assert decode(msgpack.unpackb(got.content, raw=False)["value"]["inline"]) == want
        # The result itself, streamed back from S3 through the coordinator.
        rows = msgpack.unpackb(user.get(f"/v1/swarms/{swarm_id}/results/big").content, raw=False)
        digest = rows[0]["value"]["blob"]
        h = hashlib.sha256()
        with user.stream("GET", f"/v1/blobs/{digest}") as resp:
            assert resp.status_code == 200
            for piece in resp.iter_bytes():
                h.update(piece)
        assert "sha256:" + h.hexdigest() == digest
        # The bytes are in the bucket, not in the coordinator's state folder.
        keys = [
            o["Key"]
            for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="shoal")
            for o in page.get("Contents", [])
        ]
        hexd = digest.removeprefix("sha256:")
        assert f"deploy/blobs/{hexd[:2]}/{hexd[2:]}" in keys
        assert not any(k.startswith("deploy/blobs/tmp/") for k in keys)
        local = coord.state / "blobs"
        assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))
    for log in tmp_path.glob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), log


@pytest.mark.timeout(240)
def test_a_large_result_crosses_a_deployment_with_s3_blobs(tmp_path: Path, s3: str) -> None:
    _run(tmp_path, s3, 48 * MiB)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_1gb_result_crosses_a_deployment_with_s3_blobs(tmp_path: Path, s3: str) -> None:
    _run(tmp_path, s3, 1024 * MiB)
