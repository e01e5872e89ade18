"""The per-instance socket: only the instance's token opens it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from shoal._api.schemas import RunInstruction
from shoal._node.instance import InstanceRun
from shoal._node.proxy import InstanceScope
from shoal._runtime import protocol

ITEM = RunInstruction(
    swarm_id="s",
    instance_id="s/0/t/0/0",
    alias="t",
    iteration=0,
    attempt=0,
    module="sha256:" + "0" * 64,
    datasets=[],
    image="python",
    timeout_s=None,
    global_versions={"k": "v1"},
)


def _hello(token_sent: str, tmp_path: Path) -> tuple[socket.socket | None, dict[str, Any]]:
    run = InstanceRun(host=None, item=ITEM)  # type: ignore[arg-type]  # _hello needs no host
    scope = InstanceScope("s/0/t/0/0", "n1", {}, tmp_path / "outbox")
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    with theirs:
        protocol.send(theirs, {"id": 1, "op": "hello", "args": {"token": token_sent}})
        conn = run._hello(ours, "the-token", scope, tmp_path / "bundle")
        reply = protocol.recv(theirs)
    return conn, reply


def test_a_wrong_token_is_rejected_and_the_connection_closed(tmp_path: Path) -> None:
    conn, reply = _hello("guess", tmp_path)
    assert conn is None
    assert reply["error"]["message"] == "bad token"


def test_the_right_token_gets_the_instance_context(tmp_path: Path) -> None:
    conn, reply = _hello("the-token", tmp_path)
    assert conn is not None
    conn.close()
    ctx = reply["ok"]
    assert ctx["instance_id"] == "s/0/t/0/0" and ctx["node_id"] == "n1"
    assert ctx["global_versions"] == {"k": "v1"}
    assert ctx["outbox"] == str(tmp_path / "outbox")


def test_an_oversized_first_frame_is_refused_without_reading_it(tmp_path: Path) -> None:
    run = InstanceRun(host=None, item=ITEM)  # type: ignore[arg-type]
    scope = InstanceScope("s/0/t/0/0", "n1", {}, tmp_path / "outbox")
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    with theirs:
        theirs.sendall((1 << 30).to_bytes(8, "big") + b"\x00" * 8192)
        assert run._hello(ours, "the-token", scope, tmp_path / "bundle") is None


def test_a_non_ascii_token_is_just_wrong(tmp_path: Path) -> None:
    conn, reply = _hello("gü€ss", tmp_path)
    assert conn is None and reply["error"]["message"] == "bad token"
