"""A real Ray cluster on this machine for the tests that need one: a pytest plugin
(registered by ``tests/conftest.py``) with the session-scoped ``ray_cluster`` fixture.

A head (``ray start --head``) and a second node (``ray start --address HEAD``), each a
separate set of processes with one CPU, both on a loopback address (Ray replaces
127.0.0.1 by the machine's network address, so 127.0.0.2), in a temporary folder,
with usage statistics off. They are started once per session and torn down by
process id: each ``ray start --block`` runs in a session of its own, and every
process left in that session is killed (never ``ray stop``, which ends every Ray of
the machine's user). Without ray the tests that need it are skipped, saying why
(they fail instead when ``CI`` is set: CI installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT

IP = "127.0.0.2"
START_S = 240.0  # bound on one node's start: ~25 s on a quiet 2-core machine, more when busy
STOP_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((IP, 0))
        port: int = s.getsockname()[1]
        return port


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


class RayCluster:
    """A head and ``nodes - 1`` more nodes, one CPU each (see the module)."""

    def __init__(self) -> None:
        # Short: Ray puts Unix sockets under it (a path may have at most 107 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="shoal-ray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"{IP}:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            # The workers import shoal from this checkout (CI installs it; this is for
            # a checkout run with PYTHONPATH=src).
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p
            ),
        }

    def _ray(self) -> str:
        found = Path(sys.executable).parent / "ray"
        return str(found) if found.exists() else shutil.which("ray") or "ray"

    def _start(self, name: str, args: list[str]) -> None:
        log = self.dir / f"{name}.log"
        cmd = [
            self._ray(), "start", "--block", "--num-cpus", "1", "--node-ip-address", IP,
            "--disable-usage-stats", "--object-store-memory", str(100 * 2**20),
            "--dashboard-agent-listen-port", str(_free_port()),
            "--metrics-export-port", str(_free_port()),
            *args,
        ]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.procs.append(proc)
        end = time.monotonic() + START_S
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"ray node {name} exited ({proc.returncode}):\n{log.read_text()}"
                )
            if time.monotonic() > end:
                raise RuntimeError(
                    f"ray node {name} did not start in {START_S:g}s:\n{log.read_text()}"
                )
            time.sleep(0.5)

    def start(self, nodes: int = 2) -> None:
        self._start(
            "head",
            [
                "--head", "--port", str(self.port), "--temp-dir", str(self.dir),
                "--include-dashboard", "false",
                "--ray-client-server-port", str(_free_port()),
            ],
        )  # fmt: skip
        for i in range(1, nodes):
            self._start(f"node{i}", ["--address", self.address])

    def stop(self) -> None:
        """End every process of the cluster, by the session ids of what we started."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)  # ray start --block stops its node
        end = time.monotonic() + STOP_S
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, end - time.monotonic()))
        for proc in self.procs:
            for pid in _session_pids(proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def ray_problem() -> str | None:
    """None if ray is importable here, else why not."""
    try:
        import ray  # noqa: F401
    except ImportError as e:
        return f"ray is not installed ({e}); pip install 'shoal[ray]'"
    return None


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A running two-node Ray cluster on this machine (see the module)."""
    why = ray_problem()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the ray backend: {why}")
        pytest.skip(why)
    cluster = RayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        import ray

        if ray.is_initialized():  # this process's connection, before the cluster goes
            ray.shutdown()
        cluster.stop()
