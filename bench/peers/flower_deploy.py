"""Peer benchmark: the shoal FedAvg workload on Flower's Deployment Engine.

Run inside Flower's own virtual environment (``bench/deploy_overhead.py`` makes it:
``flwr==1.41.0`` and numpy, no Ray), never shoal's::

    .../flower-deploy/bin/python bench/peers/flower_deploy.py --nodes 10 --rounds 20 \\
        --out result.json --work /tmp/flower-deploy

It starts ``flower-superlink --insecure`` and ``--nodes`` ``flower-supernode --insecure``
processes on loopback (each with ``--node-config "partition-id=k num-partitions=N"``),
both with Flower's default isolation (each runs its ServerApp / ClientApps in
subprocesses it starts), writes a Flower App (``pyproject.toml`` plus the same
ServerApp and ClientApp as ``flower_run.py``) and submits it with ``flwr run APP
CONNECTION --stream`` against a SuperLink connection in a private ``FLWR_HOME``.

Workload (identical to ``bench/workload``): FedAvg over one float32 vector of
``--params`` entries starting at zeros; client k replies ``w - 0.01 * (w - k)`` with
``num-examples = 1``; every client in every round; no evaluation. Correct when the final
model is ``m * (1 - 0.99**R)`` with ``m = (N - 1) / 2``.

Round times are stamped inside the ServerApp, as in ``flower_run.py``: from the entry
of ``configure_train`` to the exit of ``aggregate_train``. CPU: user + system seconds of
the SuperLink's process tree (its ServerApp included) and of every SuperNode's tree (its
ClientApps included), live or reaped, over rounds 2..R (sampled when round 2 starts,
read from the ServerApp's stamps) divided by R - 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIN = Path(sys.executable).parent

APP = """
import json, time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    k = float(context.node_config["partition-id"])
    w = msg.content.array_records["arrays"].to_numpy_ndarrays()[0]
    new_w = w - 0.01 * (w - k)
    content = RecordDict(
        {"arrays": ArrayRecord([new_w]), "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content, reply_to=msg)


class TimedFedAvg(FedAvg):
    def __init__(self, clients, stamps):
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=clients,
            min_available_nodes=clients,
        )
        self.stamps = stamps

    def configure_train(self, server_round, arrays, config, grid):
        self.stamps["starts"].append(time.time())
        self.flush()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        out = super().aggregate_train(server_round, replies)
        self.stamps["ends"].append(time.time())
        self.flush()
        return out

    def flush(self):
        Path(self.stamps["out"]).write_text(json.dumps(self.stamps))


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    clients, rounds, params = int(cfg["clients"]), int(cfg["rounds"]), int(cfg["params"])
    stamps = {"starts": [], "ends": [], "out": str(cfg["out"])}
    strategy = TimedFedAvg(clients, stamps)
    initial = ArrayRecord([np.zeros(params, dtype=np.float32)])
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
    final = result.arrays.to_numpy_ndarrays()[0]
    stamps["final_mean"] = float(np.mean(final, dtype=np.float64))
    m = (clients - 1) / 2
    expected = m * (1 - 0.99**rounds)
    stamps["correct"] = bool(
        final.shape == (params,) and np.allclose(final, expected, rtol=1e-4, atol=1e-6)
    )
    strategy.flush()
"""

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "shoalbench"
version = "1.0.0"
dependencies = ["flwr==1.41.0", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "shoalbench"

[tool.flwr.app.components]
serverapp = "benchapp:server_app"
clientapp = "benchapp:client_app"

[tool.flwr.app.config]
clients = {clients}
rounds = {rounds}
params = {params}
out = "{out}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    total = 0
    for pid in _tree(root):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])
    return total / CLK_TCK


def wait_log(path: Path, text: str, timeout: float) -> None:
    """Wait until ``text`` appears in a process's log."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            if text in path.read_text(errors="replace"):
                return
        time.sleep(0.1)
    raise TimeoutError(f"{path.name} did not say {text!r} within {timeout:g} s")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--params", type=int, default=100_000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop what we started
    work = a.work.resolve()
    home = work / "flwr-home"
    app = work / "app"
    for d in (home, app):
        d.mkdir(parents=True, exist_ok=True)
    stamps_file = work / "stamps.json"
    (app / "benchapp.py").write_text(APP)
    (app / "pyproject.toml").write_text(
        PYPROJECT.format(clients=a.nodes, rounds=a.rounds, params=a.params, out=stamps_file)
    )
    # Flower 1.41 serves every SuperLink API (Fleet, Control, ServerAppIo) over HTTP on
    # one port.
    port = free_port()
    (home / "config.toml").write_text(
        "[superlink]\ndefault = 'bench'\n\n"
        f"[superlink.bench]\naddress = '127.0.0.1:{port}'\ninsecure = true\n"
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (work / log).open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                cwd=work,
            )
        procs.append(proc)
        return proc

    result: dict[str, Any] = {"peer": "flower-deployment", "nodes": a.nodes, "rounds": a.rounds}
    try:
        link_argv = [str(BIN / "flower-superlink"), "--insecure", "--port", str(port)]
        link = spawn([*link_argv, "--database", str(work / "link.db")], "superlink.log")
        wait_log(work / "superlink.log", "Uvicorn running", 60)
        nodes = [
            spawn(
                [
                    *[str(BIN / "flower-supernode"), "--insecure"],
                    *["--superlink", f"127.0.0.1:{port}"],
                    *["--port", str(free_port())],  # its ClientAppIo API
                    *["--node-config", f"partition-id={k} num-partitions={a.nodes}"],
                ],
                f"supernode-{k}.log",
            )
            for k in range(a.nodes)
        ]
        for k in range(a.nodes):
            wait_log(work / f"supernode-{k}.log", "SuperNode ID", 120)
        runner = spawn([str(BIN / "flwr"), "run", str(app), "bench", "--stream"], "flwr-run.log")

        def stamps() -> dict[str, Any]:
            with contextlib.suppress(OSError, ValueError):
                got: dict[str, Any] = json.loads(stamps_file.read_text())
                return got
            return {}

        def cpu() -> tuple[float, float]:
            return tree_cpu(link.pid), sum(tree_cpu(n.pid) for n in nodes)

        first: tuple[float, float] | None = None
        deadline = time.monotonic() + 1800
        while runner.poll() is None and time.monotonic() < deadline:
            if first is None and len(stamps().get("starts", [])) >= 2:
                first = cpu()  # round 2 began: CPU from here on
            if "correct" in stamps():
                break
            time.sleep(0.05)
        last = cpu()
        got = stamps()
        starts, ends = got.get("starts", []), got.get("ends", [])
        result["round_times"] = [e - s for s, e in zip(starts, ends, strict=False)]
        result["correct"] = bool(got.get("correct"))
        result["final_mean"] = got.get("final_mean")
        if not ends or "correct" not in got:
            result["error"] = (work / "flwr-run.log").read_text(errors="replace")[-800:]
        if first is not None and a.rounds > 1:
            result["superlink_cpu_per_round"] = (last[0] - first[0]) / (a.rounds - 1)
            result["supernode_cpu_per_round"] = (last[1] - first[1]) / (a.rounds - 1)
    finally:
        for proc in reversed(procs):
            kill_group(proc)
    if result.get("round_times"):
        result["median_round_s"] = statistics.median(result["round_times"][1:] or [0])
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "round_times"}), file=sys.stderr)
    return 0 if result.get("correct") else 1


if __name__ == "__main__":
    sys.exit(main())
