"""Real deployments on loopback for tests: a coordinator process, node agent processes,
and a small user client speaking docs/api.md. Every process started here is killed
(its whole process group) by :meth:`Deployment.close`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
from helpers import free_port, poll_for

from shoal._codec import decode
from shoal._define.compile import compile_swarm
from shoal._define.swarm import Swarm

QUIET = {"PYTHONUNBUFFERED": "1"}


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 10) -> None:
    """Signal a process group, then SIGKILL it if it has not exited within ``wait``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # and anything it left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@dataclass
class Coordinator:
    """A coordinator process and a user client for it."""

    url: str
    state: Path
    proc: subprocess.Popen[bytes]
    log: Path
    ca: Path | None = None  # the certificate to trust when it speaks TLS

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    @property
    def user_token(self) -> str:
        return (self.state / "user-token").read_text().strip()

    @property
    def join_token(self) -> str:
        return (self.state / "join-token").read_text().strip()

    @property
    def operator_token(self) -> str:
        return (self.state / "operator-token").read_text().strip()

    def operator(self) -> httpx.Client:
        """A client with the operator token (the ``/v1/admin/...`` routes)."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.operator_token}"},
            timeout=30,
            verify=self.verify(),
        )

    def user(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.user_token}"},
            timeout=30,
            verify=self.verify(),
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Deployment:
    """Processes started by one test."""

    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **QUIET},
            )
        self.procs.append(proc)
        return proc

    def coordinator(
        self,
        state: Path | None = None,
        db: str | None = None,
        port: int | None = None,
        heartbeat_timeout: float = 3.0,
        max_request_mb: float = 64.0,
        tls: tuple[Path, Path] | None = None,
        extra: list[str] | None = None,
    ) -> Coordinator:
        """Start a coordinator process; ``extra``: more arguments of ``python -m
        shoal._coord`` (``["--auth-window", "2"]``)."""
        state = state or self.root / "coord"
        port = port or free_port()
        log = self.root / f"coord-{port}.log"
        argv = [
            sys.executable,
            "-m",
            "shoal._coord",
            "--state",
            str(state),
            "--port",
            str(port),
            "--heartbeat-timeout",
            str(heartbeat_timeout),
            "--max-request-mb",
            str(max_request_mb),
            "--log-level",
            "warning",
        ]
        if db is not None:
            argv += ["--db", db]
        if tls is not None:
            argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        argv += extra or []
        proc = self._spawn(argv, log)
        scheme = "https" if tls else "http"
        coord = Coordinator(
            f"{scheme}://127.0.0.1:{port}", state, proc, log, tls[0] if tls else None
        )
        wait_healthy(coord)
        return coord

    def node(
        self,
        coord: Coordinator,
        node_id: str,
        datasets: dict[str, Path] | None = None,
        extra: str = "",
        limits: str = "",
        url: str | None = None,
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a node agent; ``url`` reaches the coordinator another way (a proxy)."""
        folder = self.root / "nodes" / node_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "join-token").write_text(coord.join_token)
        lines = [
            f'node_id = "{node_id}"',
            f'coordinator = "{url or coord.url}"',
            'join_token_file = "join-token"',
            'state_dir = "state"',
            "heartbeat_interval_s = 0.5",
            "retry_max_s = 0.5",
            f'ca_cert = "{coord.ca}"' if coord.ca else "",
            extra,
            "[datasets]",
            *(f'{k} = "{v}"' for k, v in (datasets or {}).items()),
            "[limits]",
            limits,
        ]
        config = folder / "node.toml"
        config.write_text("\n".join(lines) + "\n")
        return self.restart_node(folder), folder

    def restart_node(self, folder: Path) -> subprocess.Popen[bytes]:
        """Start a node agent on the config (and state) ``node()`` left in ``folder``."""
        argv = [sys.executable, "-m", "shoal._node", "--config", str(folder / "node.toml")]
        return self._spawn(argv, folder / "agent.log")

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for proc in reversed(self.procs):
            kill_group(proc)


def wait_healthy(coord: Coordinator, timeout: float = 30.0) -> None:
    def healthy() -> bool:
        if coord.proc.poll() is not None:
            raise RuntimeError(f"coordinator exited:\n{coord.output()}")
        resp = httpx.get(f"{coord.url}/v1/health", timeout=1, verify=coord.verify())
        return resp.status_code == 200

    poll_for(
        healthy,
        timeout,
        "the coordinator to be healthy",
        ignore=(httpx.HTTPError,),
        explain=coord.output,
    )


def submit(client: httpx.Client, swarm: Swarm, seed: int = 0) -> str:
    compiled = compile_swarm(swarm)
    body = {
        "plan": compiled.plan.to_json(),
        "bundles": {d: b.data for d, b in compiled.bundles.items()},
        "seed": seed,
    }
    resp = client.post(
        "/v1/swarms",
        content=msgpack.packb(body, use_bin_type=True),
        headers={"Content-Type": "application/msgpack"},
    )
    assert resp.status_code == 200, resp.text
    swarm_id: str = resp.json()["swarm_id"]
    return swarm_id


def wait_status(
    client: httpx.Client, swarm_id: str, timeout: float = 60.0, until: Any = None
) -> dict[str, Any]:
    """Poll the swarm's status until ``until(status)`` (default: it finished)."""
    until = until or (lambda s: s["status"] != "running")

    last: list[dict[str, Any]] = []

    def arrived() -> dict[str, Any] | None:
        last[:] = [client.get(f"/v1/swarms/{swarm_id}").json()]
        return last[0] if until(last[0]) else None

    return poll_for(
        arrived,
        timeout,
        f"swarm {swarm_id} to get there",
        explain=lambda: f"its last status: {json.dumps(last[0]) if last else None}",
    )


def wait_nodes(client: httpx.Client, node_ids: list[str], timeout: float = 30.0) -> None:
    """Wait until every node in ``node_ids`` is connected."""
    nodes: dict[str, Any] = {}

    def connected() -> bool:
        nodes.update({n["node_id"]: n for n in client.get("/v1/nodes").json()})
        return all(n in nodes and nodes[n]["connected"] for n in node_ids)

    poll_for(connected, timeout, f"nodes {node_ids} to connect", explain=lambda: f"nodes: {nodes}")


def fetch_value(client: httpx.Client, wire: dict[str, Any]) -> Any:
    """Decode a wire from a user route (fetching a blob when needed)."""
    if "inline" in wire:
        return decode(wire["inline"])
    resp = client.get(f"/v1/blobs/{wire['blob']}")
    assert resp.status_code == 200, resp.text
    assert len(resp.content) == wire["length"]
    return decode(resp.content)


def global_value(client: httpx.Client, swarm_id: str, key: str) -> Any:
    resp = client.get(f"/v1/swarms/{swarm_id}/globals/{key}")
    assert resp.status_code == 200, resp.text
    return fetch_value(client, msgpack.unpackb(resp.content, raw=False)["value"])


def results(client: httpx.Client, swarm_id: str, tag: str, **params: Any) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/swarms/{swarm_id}/results/{tag}", params=params)
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = msgpack.unpackb(resp.content, raw=False)
    return [{**r, "value": fetch_value(client, r["value"])} for r in rows]


@contextlib.contextmanager
def deployment(root: Path) -> Iterator[Deployment]:
    d = Deployment(root)
    try:
        yield d
    finally:
        d.close()
