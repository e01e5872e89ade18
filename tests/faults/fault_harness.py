"""A federation of real processes for the fault tests, and the faults they inflict:
SIGKILL and restart of node agents and of the coordinator, network cuts through a
proxy (:mod:`proxy`). Every wait polls the API with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from deploy_harness import Coordinator, Deployment, kill_group
from helpers import poll_for
from proxy import Proxy

#: Small, so that a lost node is noticed in a test's time (the default is 15 s).
HEARTBEAT_TIMEOUT_S = 2.0


@dataclass
class Node:
    """One node agent of a test federation."""

    node_id: str
    folder: Path
    proc: subprocess.Popen[bytes]
    proxy: Proxy | None = None  # between this node and the coordinator, if asked for

    @property
    def credential_file(self) -> Path:
        return self.folder / "state" / "credential"

    def credential(self, timeout: float = 10.0) -> str:
        """The node's credential (written just after its enrolment was answered)."""
        poll_for(
            self.credential_file.exists,
            timeout,
            f"{self.node_id} to write its credential",
            interval=0.05,
        )
        return self.credential_file.read_text()

    def log(self) -> str:
        return (self.folder / "agent.log").read_text(errors="replace")


class Fed:
    """A coordinator, its nodes and a user client, with the faults tests inflict."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.d = Deployment(root)
        self.coord: Coordinator | None = None
        self.nodes: dict[str, Node] = {}
        self._user: httpx.Client | None = None
        self.db: str | None = None
        self.heartbeat_timeout = HEARTBEAT_TIMEOUT_S

    # ------------------------------------------------------------- processes
    def start(
        self, db: str | None = None, heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S
    ) -> Coordinator:
        """Start the coordinator (SQLite in its state folder unless ``db`` is given)."""
        self.db = db or f"sqlite:///{self.root / 'shoal.db'}"
        self.heartbeat_timeout = heartbeat_timeout
        self.coord = self.d.coordinator(db=self.db, heartbeat_timeout=heartbeat_timeout)
        return self.coord

    @property
    def user(self) -> httpx.Client:
        if self._user is None:
            assert self.coord is not None
            self._user = self.coord.user()
            self.d.clients.append(self._user)
        return self._user

    def node(self, node_id: str, via_proxy: bool = False) -> Node:
        """Start a node agent (behind its own proxy if ``via_proxy``)."""
        assert self.coord is not None
        proxy = None
        if via_proxy:
            host, port = self.coord.url.rsplit("//", 1)[1].rsplit(":", 1)
            proxy = Proxy((host, int(port)))
        proc, folder = self.d.node(self.coord, node_id, url=proxy.url if proxy else None)
        node = self.nodes[node_id] = Node(node_id, folder, proc, proxy)
        return node

    def kill_node(self, node_id: str) -> None:
        """SIGKILL a node agent (its tasks run in their own sessions and are orphaned)."""
        kill_group(self.nodes[node_id].proc, signal.SIGKILL)

    def restart_node(self, node_id: str) -> Node:
        """Start a node agent again on the same config and state folder."""
        node = self.nodes[node_id]
        node.proc = self.d.restart_node(node.folder)
        return node

    def kill_coordinator(self) -> None:
        """SIGKILL the coordinator (nothing of it runs afterwards)."""
        assert self.coord is not None
        kill_group(self.coord.proc, signal.SIGKILL)
        if self._user is not None:
            self._user.close()
            self._user = None

    def restart_coordinator(self) -> Coordinator:
        """A new coordinator process on the same state folder, database and port."""
        assert self.coord is not None
        port = int(self.coord.url.rsplit(":", 1)[1])
        self.coord = self.d.coordinator(
            state=self.coord.state, db=self.db, port=port, heartbeat_timeout=self.heartbeat_timeout
        )
        return self.coord

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proxy is not None:
                node.proxy.close()
        self.d.close()

    # ----------------------------------------------------------------- waits
    def diagnostics(self) -> str:
        """The coordinator's and every agent's log (tails), for failure messages."""
        parts = []
        if self.coord is not None:
            parts.append(f"--- coordinator\n{self.coord.output()[-6000:]}")
        for node in self.nodes.values():
            parts.append(f"--- agent {node.node_id}\n{node.log()[-3000:]}")
        return "\n".join(parts)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``check()`` every 0.1 s until it returns a true value; return it."""
        return poll_for(
            check, timeout, what, ignore=(httpx.TransportError,), explain=self.diagnostics
        )

    def status(self, swarm_id: str) -> dict[str, Any]:
        resp = self.user.get(f"/v1/swarms/{swarm_id}")
        resp.raise_for_status()
        status: dict[str, Any] = resp.json()
        return status

    def wait_done(self, swarm_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the swarm finished; return its status."""

        def done() -> dict[str, Any] | None:
            status = self.status(swarm_id)
            return status if status["status"] != "running" else None

        status: dict[str, Any] = self.wait(f"swarm {swarm_id} to finish", done, timeout)
        return status

    def logs(self, swarm_id: str, **params: Any) -> list[dict[str, Any]]:
        resp = self.user.get(f"/v1/swarms/{swarm_id}/logs", params=params)
        resp.raise_for_status()
        rows: list[dict[str, Any]] = resp.json()
        return rows

    def wait_log(self, swarm_id: str, text: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for a log record of the swarm containing ``text``; return it."""

        def found() -> dict[str, Any] | None:
            return next((r for r in self.logs(swarm_id) if text in r["message"]), None)

        record: dict[str, Any] = self.wait(f"log {text!r}", found, timeout)
        return record

    def node_rows(self) -> dict[str, dict[str, Any]]:
        return {n["node_id"]: n for n in self.user.get("/v1/nodes").json()}

    def wait_connected(self, *node_ids: str, since: float = 0.0, timeout: float = 30.0) -> None:
        """Wait until every node is connected (and heard from after ``since``)."""

        def ok() -> bool:
            rows = self.node_rows()
            return all(
                n in rows and rows[n]["connected"] and rows[n]["last_seen"] >= since
                for n in node_ids
            )

        self.wait(f"nodes {node_ids} connected", ok, timeout)


# ------------------------------------------------------------------ processes left


def processes_under(root: Path) -> list[tuple[int, str]]:
    """Live processes whose command line or working folder lies under ``root``."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if state != "Z" and (str(root) in cmdline or cwd.startswith(str(root))):
            found.append((int(entry.name), cmdline))
    return found


def reap(root: Path, timeout: float = 10.0) -> list[tuple[int, str]]:
    """Wait for processes under ``root`` to end; kill and return those that did not."""
    with contextlib.suppress(TimeoutError):
        poll_for(lambda: not processes_under(root), timeout, f"the processes under {root} to end")
    left = processes_under(root)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return left


def task_processes(node: Node) -> list[tuple[int, str]]:
    """The task processes of a node's instances, seen from the host whatever the
    executor (a sandbox's PID namespace hides the host pid from the task itself)."""
    return [p for p in processes_under(node.folder) if "shoal._node.task_runner" in p[1]]
