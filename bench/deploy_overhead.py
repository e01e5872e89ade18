"""Deployment overhead: the FedAvg workload on real processes, shoal vs Flower (vs FLARE).

    python bench/deploy_overhead.py --nodes 10,50 --rounds 20 --peers flower

Shoal runs the workload of ``bench/workload`` (FedAvg over one float32 vector of
``--params`` entries; client k's update is ``w <- w - 0.01 * (w - k)``) on a real
deployment on this machine: a coordinator process (SQLite store) and N node agent
processes on loopback, each with the node's default executor (``auto``: bubblewrap
here), as ``shoal up`` starts them. ``--modes warm,cold`` also runs it with warm task
processes off (``[warm] enabled = false`` in every node.toml): a fresh sandboxed
process per instance, the agent before issue #21.

Flower runs the same ServerApp / ClientApp as ``bench/peers/flower_run.py`` on its
deployment engine (``bench/peers/flower_deploy.py``): ``flower-superlink`` plus N
``flower-supernode`` processes on loopback, insecure, started by that script inside
Flower's own virtual environment. NVIDIA FLARE: see bench/README.md.

Per-round time: shoal's is the time between two consecutive aggregator instances'
``clients`` metric (each round's last act, stamped when recorded), so rounds 2..R;
the median. Flower's is stamped in its ServerApp (``bench/peers/flower_deploy.py``).
CPU per round: user + system seconds of the coordinator, and of the agents with every
task process they started (alive or reaped), from the first look at the swarm that sees
iteration >= 1 (the status is read every 50 ms until then) to its end, divided by the
rounds in between; from the deploy on, when the run ended before that look or either
side used less than a CPU tick (10 ms) in between. Runs of the systems alternate
(``--repeat``) and medians are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
FLOWER_REQS = ["flwr==1.41.0", "numpy"]


# ----------------------------------------------------------------------- processes
def _tree(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its descendants, the reaped ones included: each live
    process's own time plus what its reaped children used."""
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def machine_speed_ms() -> float:
    """Milliseconds of one fixed single-threaded Python workload, the median of 5 (msgpack
    of a 400 KB vector and a plain loop, what a round is made of): a reference to compare
    runs made at different times, on a machine whose speed drifts by a quarter within an
    hour (bench/README.md)."""
    import msgpack
    import numpy as np

    doc = {"value": np.arange(100_000, dtype=np.float32).tobytes(), "keys": list(range(1000))}
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            msgpack.unpackb(msgpack.packb(doc))
        total = 0
        for i in range(100_000):
            total += i * i % 7
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env or {**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_for(check: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            got = check()
            if got:
                return got
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {timeout:g} s")


# ----------------------------------------------------------------------- shoal side
@dataclass
class Result:
    system: str
    nodes: int
    rounds: int
    round_times: list[float] = field(default_factory=list)
    coord_cpu_per_round: float | None = None
    node_cpu_per_round: float | None = None
    correct: bool = False
    error: str = ""
    loadavg: float = 0.0
    speed_ms: float = 0.0  # machine_speed_ms() just before the run

    @property
    def per_round(self) -> float:
        """The median of rounds 2..R (shoal's times are those rounds already)."""
        times = self.round_times if self.system.startswith("shoal") else self.round_times[1:]
        return statistics.median(times) if times else float("nan")


def _swarm(rounds: int, params: int) -> Any:
    import numpy as np

    from shoal import Module, Swarm, Task

    workload = HERE / "workload"

    class FedAvgBench(Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.name = "fedavg_bench"
            self.max_iterations = rounds
            self.set_global("w", np.zeros(params, dtype=np.float32))
            self.worker = Task(Module(workload / "worker.py"), method="all", alias="worker")
            self.aggregator = Task(
                Module(workload / "aggregator.py"), method="any", maximum=1, alias="aggregator"
            )

        def execute(self) -> Task:
            return self.aggregator(self.worker())

    return FedAvgBench()


def node_toml(node_id: str, url: str, token: Path, warm: bool, executor: str) -> str:
    return "\n".join(
        [
            f'node_id = "{node_id}"',
            f'coordinator = "{url}"',
            f'join_token_file = "{token}"',
            'state_dir = "state"',
            f'executor = "{executor}"',
            "heartbeat_interval_s = 5",
            "[warm]",
            f"enabled = {'true' if warm else 'false'}",
        ]
    )


def run_shoal(
    nodes: int, rounds: int, params: int, warm: bool, executor: str, work: Path
) -> Result:
    """One run: a coordinator and ``nodes`` agents, the workload for ``rounds``."""
    import numpy as np

    from shoal import Client

    res = Result(f"shoal-{'warm' if warm else 'cold'}", nodes, rounds)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = work / "coord"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        argv = [sys.executable, "-m", "shoal._coord", "--state", str(state), "--port"]
        coord = spawn([*argv, str(port), "--log-level", "warning"], work / "coord.log")
        procs.append(coord)
        wait_for(lambda: (state / "join-token").is_file(), 60, "the coordinator's tokens")
        token = state / "join-token"
        user = (state / "user-token").read_text().strip()
        agents = []
        for i in range(nodes):
            folder = work / f"node-{i:05d}"
            folder.mkdir()
            (folder / "node.toml").write_text(
                node_toml(f"node-{i:05d}", url, token, warm, executor) + "\n"
            )
            agents.append(
                spawn(
                    [sys.executable, "-m", "shoal._node", "--config", str(folder / "node.toml")],
                    folder / "agent.log",
                )
            )
        procs += agents
        with Client(url, user, timeout=120) as client:
            wait_for(
                lambda: sum(n.connected for n in client.nodes()) == nodes, 120, "the nodes joining"
            )
            swarm_id = client.deploy(_swarm(rounds, params))
            # Looked at twice a second only, once round 1 was seen: following every change
            # of the status (its event stream) would cost the coordinator a status per
            # instance event. Until then it is looked at every 50 ms, so short warm runs
            # are not over before it is; if they are, the CPU counts from the deploy.
            start = (0, tree_cpu(coord.pid), sum(tree_cpu(x.pid) for x in agents))
            cpu_from: tuple[int, float, float] | None = None
            deadline = time.monotonic() + 1800
            while True:
                status = client.status(swarm_id)
                if status.finished or time.monotonic() > deadline:
                    break
                if cpu_from is None and status.iteration >= 1:
                    coord_cpu, node_cpu = tree_cpu(coord.pid), sum(tree_cpu(x.pid) for x in agents)
                    cpu_from = (status.iteration, coord_cpu, node_cpu)
                time.sleep(0.05 if cpu_from is None else 0.5)
            coord_cpu, node_cpu = tree_cpu(coord.pid), sum(tree_cpu(x.pid) for x in agents)
            if status.status != "succeeded":
                res.error = f"swarm {status.status}: {status.reason}"
                return res
            # The aggregator's metric, once per round, stamped when it was recorded.
            stamps = sorted(m.time for m in client.metrics(swarm_id, "clients", frame=False))
            res.round_times = [b - a for a, b in itertools.pairwise(stamps)]
            # A window of a few fast rounds may be shorter than /proc's 10 ms CPU tick
            # for the agents or the coordinator: then count from the deploy instead.
            unresolved = cpu_from is not None and (
                coord_cpu <= cpu_from[1] or node_cpu <= cpu_from[2]
            )
            if cpu_from is None or rounds - cpu_from[0] <= 0 or unresolved:
                cpu_from = start
            if rounds - cpu_from[0] > 0:
                res.coord_cpu_per_round = (coord_cpu - cpu_from[1]) / (rounds - cpu_from[0])
                res.node_cpu_per_round = (node_cpu - cpu_from[2]) / (rounds - cpu_from[0])
            w = np.asarray(client.get_global(swarm_id, "w"), dtype=np.float64)
            m = (nodes - 1) / 2
            res.correct = bool(np.allclose(w, m + (0 - m) * 0.99**rounds, rtol=1e-4))
    except Exception as e:  # a failed run is reported, the next one still runs
        res.error = f"{type(e).__name__}: {e}"
    finally:
        for p in reversed(procs):
            kill_group(p)
    return res


# ----------------------------------------------------------------------- peers
def peer_python(cache: Path) -> Path:
    """Flower's own virtual environment (without Ray: the deployment engine needs none)."""
    venv = cache / "flower-deploy"
    python = venv / "bin" / "python"
    marker = venv / ".shoal-bench-installed"
    if marker.is_file() and marker.read_text() == "\n".join(FLOWER_REQS):
        return python
    print(f"installing {' '.join(FLOWER_REQS)} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *FLOWER_REQS], check=True)
    marker.write_text("\n".join(FLOWER_REQS))
    return python


def run_flower(nodes: int, rounds: int, params: int, cache: Path, work: Path) -> Result:
    res = Result("flower", nodes, rounds)
    python = peer_python(cache)
    out = work / "flower.json"
    argv = [str(python), str(HERE / "peers" / "flower_deploy.py"), "--nodes", str(nodes)]
    argv += ["--rounds", str(rounds), "--params", str(params), "--out", str(out)]
    argv += ["--work", str(work)]
    proc = subprocess.run(argv, capture_output=True, timeout=1800, check=False)
    if not out.is_file():
        res.error = (proc.stdout + proc.stderr).decode(errors="replace")[-800:]
        return res
    doc = json.loads(out.read_text())
    res.round_times = doc["round_times"]
    res.coord_cpu_per_round = doc.get("superlink_cpu_per_round")
    res.node_cpu_per_round = doc.get("supernode_cpu_per_round")
    res.correct = bool(doc["correct"])
    res.error = doc.get("error", "")
    return res


# ----------------------------------------------------------------------- report
def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or x != x else f"{x:.{digits}f}"


def report(results: list[Result]) -> str:
    lines = [
        "| N | system | rounds | runs | per-round s (median of runs' medians, rounds 2..R) | "
        "coordinator CPU s/round | node CPU s/round | correct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.nodes, r.system), []).append(r)
    for (n, system), rs in sorted(groups.items()):
        ok = [r for r in rs if not r.error]
        per = statistics.median([r.per_round for r in ok]) if ok else None
        cc = [r.coord_cpu_per_round for r in ok if r.coord_cpu_per_round is not None]
        nc = [r.node_cpu_per_round for r in ok if r.node_cpu_per_round is not None]
        correct = "yes" if ok and all(r.correct for r in ok) else "NO"
        lines.append(
            f"| {n} | {system} | {rs[0].rounds} | {len(ok)}/{len(rs)} | {_fmt(per)} | "
            f"{_fmt(statistics.median(cc) if cc else None)} | "
            f"{_fmt(statistics.median(nc) if nc else None)} | {correct} |"
        )
    for n in sorted({r.nodes for r in results}):
        med = {
            s: statistics.median([r.per_round for r in rs if not r.error])
            for (m, s), rs in groups.items()
            if m == n and any(not r.error for r in rs)
        }
        base = med.get("shoal-warm")
        for s, v in sorted(med.items()):
            if base is not None and s != "shoal-warm":
                lines.append(f"\nN={n}: {s} / shoal-warm per-round = {v / base:.1f}x")
    errors = [f"- {r.system} N={r.nodes}: {r.error}" for r in results if r.error]
    return "\n".join(lines + (["", "Errors:", *errors] if errors else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="10,50", help="comma-separated node counts")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--params", type=int, default=100_000)
    p.add_argument("--modes", default="warm", help="shoal modes: warm, cold or warm,cold")
    p.add_argument("--peers", default="none", help="flower, or none")
    p.add_argument("--repeat", type=int, default=1, help="alternating runs of each system")
    p.add_argument(
        "--peer-rounds",
        type=int,
        default=None,
        help="rounds of the peers' runs (default: --rounds); a Flower round takes seconds",
    )
    p.add_argument(
        "--cold-rounds", type=int, default=None, help="rounds of shoal-cold (default: --rounds)"
    )
    p.add_argument("--executor", default="auto", help="the node agents' executor")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoal-bench")
    p.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    a = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every process a run started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    systems = [f"shoal-{m}" for m in a.modes.split(",") if m]
    systems += [x for x in a.peers.split(",") if x and x != "none"]
    results: list[Result] = []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for n in [int(x) for x in a.nodes.split(",")]:
        for rep in range(a.repeat):
            for system in systems:
                with tempfile.TemporaryDirectory(prefix="shoal-deploy-bench-") as tmp:
                    load = os.getloadavg()[0]
                    speed = machine_speed_ms()
                    if system.startswith("shoal-"):
                        warm = system == "shoal-warm"
                        rounds = a.rounds if warm else (a.cold_rounds or a.rounds)
                        r = run_shoal(n, rounds, a.params, warm, a.executor, Path(tmp))
                    elif system == "flower":
                        rounds = a.peer_rounds or a.rounds
                        r = run_flower(n, rounds, a.params, a.cache, Path(tmp))
                    else:
                        raise SystemExit(f"unknown system {system!r}")
                    r.loadavg = load
                    r.speed_ms = speed
                    results.append(r)
                    print(
                        f"N={n} run {rep + 1} {system}: per-round {_fmt(r.per_round)} s, "
                        f"coordinator CPU/round {_fmt(r.coord_cpu_per_round)}, node CPU/round "
                        f"{_fmt(r.node_cpu_per_round)}, correct={r.correct}, load {load:.2f}, "
                        f"machine speed {speed:.1f} ms" + (f", ERROR {r.error}" if r.error else ""),
                        flush=True,
                    )
    print(f"load average at end: {os.getloadavg()}", flush=True)
    print(report(results))
    if a.json is not None:
        a.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0 if results and all(r.correct and not r.error for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
