"""Start-up overhead of an instance under the ``bwrap`` executor against a plain
subprocess (the ``process`` executor).

Each start is what the node agent does for one instance, minus the coordinator: create
the work dir and the instance's Unix socket, ``executor.start()``, accept the task
runner's connection and check its token, hand it its context, let it import and run a
trivial module (``main()`` returns at once), read its ``done`` frame, and wait for the
process to exit. Two figures per executor, medians over ``--runs`` starts (after one
warm-up start each, not counted; the executors take turns, so a machine whose load
drifts during the run weighs on both alike):

- connected: ``start()`` until the runner's authenticated hello arrived;
- exit: ``start()`` until the process has exited after reporting ``done``.

Both run with the limits of a real node (memory 1024 MB, 512 processes); under ``bwrap``
in a cgroup of its own when this machine lets the agent create one (printed).

    python bench/sandbox_startup.py --runs 20 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shoal._exec.base import Executor, InstanceSpec
from shoal._exec.registry import make_executor
from shoal._runtime import protocol

TASK = "def main():\n    return None\n"
EXECUTORS = ("process", "bwrap")


def _bundle(root: Path) -> Path:
    folder = root / "bundle"
    folder.mkdir()
    (folder / "shoal-module.json").write_text(json.dumps({"entry": "bench_task"}))
    (folder / "bench_task.py").write_text(TASK)
    return folder


def one_start(executor: Executor, root: Path, bundle: Path, i: int) -> tuple[float, float]:
    """One instance from ``start()`` to exit; (seconds to connected, seconds to exit)."""
    workdir = root / "work" / f"{executor.name}-{i}"
    (workdir / "outbox").mkdir(parents=True)
    sock_path = root / "run" / f"{executor.name}-{i}.sock"
    sock_path.parent.mkdir(exist_ok=True)
    spec = InstanceSpec(
        f"bench/{i}",
        Path(sys.executable),
        None,
        workdir,
        bundle,
        {},
        root / "blobs",
        memory_mb=1024,
        max_processes=512,
    )
    token = secrets.token_urlsafe(32)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(sock_path))
        listener.listen(1)
        listener.settimeout(60)
        t0 = time.perf_counter()
        handle = executor.start(spec, sock_path, token)
        try:
            conn, _ = listener.accept()
            with conn:
                hello = protocol.recv(conn)
                if hello.get("args", {}).get("token") != token:
                    raise RuntimeError(f"bad hello: {hello}")
                connected = time.perf_counter() - t0
                ctx = {
                    "swarm_id": "bench",
                    "instance_id": spec.instance_id,
                    "node_id": "bench-node",
                    "alias": "t",
                    "iteration": 0,
                    "attempt": 0,
                    "module": "sha256:bench",
                    "folder": str(bundle),
                    "outbox": str(workdir / "outbox"),
                    "global_versions": {},
                }
                protocol.send(conn, {"id": hello.get("id"), "ok": ctx})
                while True:
                    frame = protocol.recv(conn)
                    if frame.get("op") == "done":
                        break
                if not frame.get("ok"):
                    raise RuntimeError(f"the task failed: {frame}")
                rc = handle.wait(60)  # as the agent does: the socket stays open meanwhile
                total = time.perf_counter() - t0
        finally:
            if handle.poll() is None:
                handle.kill()
    if rc != 0:
        log = (workdir / "runner.log").read_text(errors="replace")
        raise RuntimeError(f"{executor.name}: exit status {rc}\n{log}")
    sock_path.unlink()
    shutil.rmtree(workdir)
    return connected, total


def measure(runs: int, root: Path, bundle: Path) -> dict[str, dict[str, Any]]:
    """Median seconds to connected and to exit, per executor."""
    executors = {name: make_executor(name) for name in EXECUTORS}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in EXECUTORS}
    for executor in executors.values():
        one_start(executor, root, bundle, -1)  # warm-up: interpreter probe, page cache
    for i in range(runs):
        for name, executor in executors.items():
            times[name].append(one_start(executor, root, bundle, i))
    out: dict[str, dict[str, Any]] = {}
    for name, executor in executors.items():
        out[name] = {
            "connected_s": statistics.median(t[0] for t in times[name]),
            "total_s": statistics.median(t[1] for t in times[name]),
            "runs": runs,
        }
        cgroups = getattr(executor, "cgroups", None)
        if cgroups is not None:
            out[name]["cgroups"] = cgroups.describe()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="start-up overhead of bwrap vs a subprocess")
    p.add_argument("--runs", type=int, default=20, help="starts per executor (median)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if shutil.which("bwrap") is None:
        sys.exit("bubblewrap is not installed: apt-get install bubblewrap")
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = Path(tmp)
        (root / "blobs").mkdir()
        report = measure(a.runs, root, _bundle(root))
    proc, bw = report["process"], report["bwrap"]
    print(f"median of {a.runs} starts each; bwrap limits: {bw.get('cgroups', 'rlimits only')}")
    print("| figure | process | bwrap | bwrap/process |")
    print("|---|---|---|---|")
    for key, label in (("connected_s", "start -> connected s"), ("total_s", "start -> exit s")):
        print(f"| {label} | {proc[key]:.3f} | {bw[key]:.3f} | {bw[key] / proc[key]:.2f} |")
    print(f"bwrap adds {1000 * (bw['total_s'] - proc['total_s']):.0f} ms per instance")
    if a.json is not None:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
