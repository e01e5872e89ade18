"""Simulator overhead: shoal's simulator against Flower's and NVIDIA FLARE's, side by side.

The workload (the same for every system): FedAvg over one float32 vector of P = 100,000
parameters (400 KB). Client k's local "training" is ``w <- w - 0.01 * (w - k)``; the
server takes the equal-weight mean of every client's vector; every client takes part in
every round; R = 10 rounds. The update is linear, so the final global has a closed form,
``m + (0 - m) * 0.99**R`` with ``m = (N - 1) / 2``: every run is checked against it, and a
run that dropped a client fails.

Each system runs in its own process session. From outside, this script samples the
session every 50 ms: the peak of the summed PSS of every process in it, and the CPU
seconds of every process ever seen (plus those reaped by the child). Round times are
measured inside each system (see its runner) and reported as the median of rounds
2..R; "first round" includes start-up.

    python bench/sim_overhead.py                          # shoal alone, N = 10..10000
    python bench/sim_overhead.py --peers flower           # side by side with Flower
    python bench/sim_overhead.py --peers flower,nvflare --clients 10,100,1000
    python bench/sim_overhead.py --aggregation-memory     # N = 1000, 10M parameters
    python bench/sim_overhead.py --backends ray,local --ray-address auto --clients 100,1000

``--backends ray,local`` runs shoal twice per N: its local pool (``shoal``) and its pool
of Ray actors (``shoal-ray``, ``backend="ray"``) on the cluster at ``--ray-address``
(without one, each run starts a local Ray, whose start-up then counts in its first
round).

Peers are installed on first use into their own virtual environments under
``--cache`` (default ``~/.cache/shoal-bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = {
    # name: (pip requirements, runner script)
    "flower": (["flwr[simulation]==1.41.0", "numpy"], HERE / "peers" / "flower_run.py"),
    "nvflare": (["nvflare==2.9.0", "numpy"], HERE / "peers" / "nvflare_run.py"),
}
# Largest N each peer is run at: beyond it one run takes longer than the whole benchmark
# (Flower: 2 rounds of N=10000 took 510 s and 9 GiB here; NVIDIA FLARE: one round of
# N=1000 took ~9.5 minutes, and its simulator refuses more than 100 clients without the
# deprecated CLI). Overridden with --peer-max.
PEER_MAX = {"flower": 1000, "nvflare": 100}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- shoal side
def run_shoal(
    clients: int,
    rounds: int,
    params: int,
    out: Path,
    workers: int | None,
    backend: str = "local",
    ray_address: str | None = None,
) -> int:
    """The child process: the workload as an ordinary swarm, through the public API."""
    t_start = time.monotonic()
    import numpy as np

    import shoal
    from shoal import Module, Swarm, Task

    workload = HERE / "workload"

    class FedAvgBench(Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.name = "fedavg_bench"
            self.max_iterations = rounds
            self.set_global("w", np.zeros(params, dtype=np.float32))
            self.set_global("measure_memory", params >= 1_000_000)
            self.worker = Task(Module(workload / "worker.py"), method="all", alias="worker")
            self.aggregator = Task(
                Module(workload / "aggregator.py"), method="any", maximum=1, alias="aggregator"
            )

        def execute(self) -> Task:
            return self.aggregator(self.worker())

    starts: list[float] = []

    def progress(what: str, iteration: int, done: int, scheduled: int) -> None:
        if what == "iteration":
            starts.append(time.monotonic())

    run = shoal.simulate(
        FedAvgBench(),
        nodes=clients,
        workers=workers,
        progress=progress,
        raise_on_failure=False,  # a failed run is recorded as not correct
        backend=backend,
        ray_address=ray_address,
    )
    end = time.monotonic()
    bounds = [*starts, end]
    round_times = [b - a for a, b in itertools.pairwise(bounds)]
    m = (clients - 1) / 2
    expected = m + (0 - m) * 0.99**rounds
    final = np.asarray(run.globals["w"], dtype=np.float64) if run.ok else np.array([np.nan])
    correct = bool(run.ok and np.allclose(final, expected, rtol=1e-4))
    result: dict[str, Any] = {
        "peer": "shoal" if backend == "local" else f"shoal-{backend}",
        "version": shoal.__version__,
        "clients": clients,
        "rounds": rounds,
        "params": params,
        "round_times": round_times,
        "first_round_s": (starts[1] if len(starts) > 1 else end) - t_start,
        "total_s": end - t_start,
        "final_mean": float(final.mean()),
        "expected": expected,
        "correct": correct,
        "status": run.status,
    }
    if run.ok and params >= 1_000_000:
        peak = run.results.select("peak_bytes", alias="aggregator")
        result["aggregator_peak_bytes"] = max(peak.values())
    out.write_text(json.dumps(result))
    return 0 if correct else 1


# ------------------------------------------------------------------------- measuring
@dataclass
class Measured:
    """What the sampler saw of one run."""

    rc: int
    wall_s: float
    cpu_s: float
    peak_pss: int
    report: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    peak_rss: int = 0  # summed RSS: counts each shared page once per process using it


def _session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` and, transitively, their children.

    Children count even when they left the session: NVIDIA FLARE's simulator starts each
    client worker with ``os.setsid``, so a session alone misses all of its clients.
    """
    parent: dict[int, int] = {}
    inside: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])  # field 4 (ppid) counted after the command name
        if int(fields[3]) == sid:  # field 6 (session)
            inside.add(pid)
    grown = True
    while grown:
        more = {pid for pid, ppid in parent.items() if ppid in inside and pid not in inside}
        inside |= more
        grown = bool(more)
    return sorted(inside)


def _pss_and_cpu(pid: int) -> tuple[int, float, int] | None:
    """(PSS bytes, CPU seconds, RSS bytes) of a process; None if it is gone."""
    try:
        pss = rss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        return pss, cpu, rss
    except (OSError, ValueError, IndexError):
        return None


def measure(
    cmd: list[str],
    report: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    mem_limit: int | None = None,
) -> Measured:
    """Run ``cmd`` in a new session and sample its whole process tree.

    ``mem_limit`` (bytes of summed PSS): the run is killed once it uses more, so that a
    system that grows past it does not push a shared machine into its OOM killer.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        start_new_session=True,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = peak_rss = 0
    cpu_seen: dict[int, float] = {}
    output: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    timed_out = over = False
    while proc.poll() is None:
        if time.monotonic() - t0 > timeout:
            timed_out = True
            break
        if mem_limit is not None and peak > mem_limit:
            over = True
            break
        total = total_rss = 0
        for pid in _session_pids(proc.pid):
            got = _pss_and_cpu(pid)
            if got is not None:
                total += got[0]
                cpu_seen[pid] = got[1]
                total_rss += got[2]
        peak = max(peak, total)
        peak_rss = max(peak_rss, total_rss)
        time.sleep(0.05)
    if timed_out or over:
        _kill_session(proc.pid)
    proc.wait()
    _kill_session(proc.pid)  # leave nothing behind (ray, nvflare workers)
    reader.join(timeout=5)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = Measured(proc.returncode, wall, max(reaped, sum(cpu_seen.values())), peak)
    m.peak_rss = peak_rss
    if timed_out:
        m.error = f"timed out after {timeout:.0f}s"
    elif over:
        m.error = f"stopped: its summed PSS passed the memory limit of {mem_limit / 2**30:.1f} GiB"
    elif report.is_file():
        m.report = json.loads(report.read_text())
    else:
        m.error = "no report: " + "".join(output)[-600:]
    return m


def _kill_session(sid: int) -> None:
    import signal

    for pid in _session_pids(sid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- peers
def peer_python(name: str, cache: Path, requirements: list[str] | None = None) -> Path:
    """The interpreter of the peer's own virtual environment, installed on first use.

    ``requirements`` (default: the peer's in ``PEERS``) are what go into ``cache / name``;
    another benchmark names its own environment and requirements.
    """
    reqs = requirements if requirements is not None else PEERS[name][0]
    venv = cache / name
    marker = venv / ".shoal-bench-installed"
    python = venv / "bin" / "python"
    if marker.is_file() and marker.read_text() == "\n".join(reqs):
        # A cached environment can lose a package (seen: flwr without pathspec): check.
        check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True)
        if check.returncode == 0:
            return python
        print(f"{venv} is broken ({check.stdout.decode().strip()}); repairing", flush=True)
    print(f"installing {name} ({' '.join(reqs)}) into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *reqs], check=True)
    marker.write_text("\n".join(reqs))
    return python


def run_one(
    system: str, clients: int, rounds: int, params: int, args: argparse.Namespace
) -> Measured:
    """Run one system on one size and measure it."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as tmp:
        report = Path(tmp) / "report.json"
        common = [
            "--clients",
            str(clients),
            "--rounds",
            str(rounds),
            "--params",
            str(params),
            "--out",
            str(report),
        ]
        if system.startswith("shoal"):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *common]
            if args.workers:
                cmd += ["--workers", str(args.workers)]
            if system == "shoal-ray":
                cmd += ["--backend", "ray"]
                if args.ray_address:
                    cmd += ["--ray-address", args.ray_address]
        else:
            cmd = [str(peer_python(system, args.cache)), str(PEERS[system][1]), *common]
        return measure(cmd, report, args.timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


# ---------------------------------------------------------------------------- report
def figures(m: Measured) -> dict[str, float | None]:
    """The compared figures of one run (None where the run did not produce them)."""
    r = m.report
    rounds = r.get("round_times") or []
    later = rounds[1:] if len(rounds) > 1 else rounds
    return {
        "per-round s (median 2..R)": statistics.median(later) if later else None,
        "first round s": r.get("first_round_s"),
        "total wall s": m.wall_s if r else None,
        "CPU s": m.cpu_s if r else None,
        "peak PSS MB": m.peak_pss / 2**20 if r else None,
    }


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def table(results: dict[int, dict[str, Measured]], systems: list[str]) -> str:
    """A markdown table: each figure for each system, and the first system's over each
    other's (``--backends ray,local``: the Ray pool's over the local pool's)."""
    base = systems[0]  # the ratios are its figures over each other system's
    head = ["N", "figure", *systems, *[f"{base}/{p}" for p in systems[1:]]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, by_system in sorted(results.items()):
        figs = {s: figures(by_system[s]) for s in systems if s in by_system}
        for name in figures(by_system[base]):
            row = [str(n), name]
            row += [_fmt(figs[s][name]) if s in figs else "—" for s in systems]
            for p in systems[1:]:
                a, b = figs[base][name], figs.get(p, {}).get(name)
                row.append(f"{a / b:.3f}" if a is not None and b else "—")
            lines.append("| " + " | ".join(row) + " |")
        checks = []
        for s in systems:
            m = by_system.get(s)
            if m is None:
                continue
            ok = m.report.get("correct")
            checks.append(f"{s}: {'correct' if ok else 'FAILED ' + (m.error or str(m.rc))}")
        lines.append(f"| {n} | check | " + "; ".join(checks) + " |" + " |" * (len(head) - 3))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--clients",
        default="10,100,1000,10000",
        help="comma-separated N (default 10,100,1000,10000)",
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--params", type=int, default=100_000)
    p.add_argument("--peers", default="none", help="flower, nvflare, both comma-separated, or none")
    p.add_argument("--workers", type=int, default=None, help="shoal's worker processes")
    p.add_argument(
        "--backends",
        default="local",
        help="shoal's pool: local, ray, or local,ray (side by side as shoal and shoal-ray)",
    )
    p.add_argument("--ray-address", default=None, help="the Ray cluster (default: a local Ray)")
    p.add_argument("--backend", default="local", help=argparse.SUPPRESS)  # the child's
    p.add_argument(
        "--peer-max",
        action="append",
        default=[],
        metavar="PEER=N",
        help=f"largest N to run a peer at (default {PEER_MAX})",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoal-bench")
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument(
        "--aggregation-memory",
        action="store_true",
        help="N=1000, 10M parameters, 1 round: the aggregator's peak memory",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        return run_shoal(
            int(args.clients),
            args.rounds,
            args.params,
            args.out,
            args.workers,
            args.backend,
            args.ray_address,
        )
    if args.aggregation_memory:
        return aggregation_memory(args)

    limits = dict(PEER_MAX)
    for item in args.peer_max:
        name, _, value = item.partition("=")
        limits[name] = int(value)
    args.peer_max = limits
    peers = [x for x in args.peers.split(",") if x and x != "none"]
    unknown = [x for x in peers if x not in PEERS]
    if unknown:
        p.error(f"unknown peer(s) {unknown}; choose from {sorted(PEERS)}")
    backends = [b for b in args.backends.split(",") if b]
    if not backends or any(b not in ("local", "ray") for b in backends):
        p.error(f"--backends {args.backends!r}: choose local, ray or local,ray")
    systems = ["shoal" if b == "local" else "shoal-ray" for b in backends] + peers
    sizes = [int(x) for x in args.clients.split(",")]
    print(
        f"workload: FedAvg, {args.params} float32 parameters, {args.rounds} rounds; "
        f"machine: {os.cpu_count()} cores, {_mem_gb():.0f} GiB; {time.strftime('%Y-%m-%d')}"
    )
    results: dict[int, dict[str, Measured]] = {}
    ok = True
    for n in sizes:
        results[n] = {}
        for system in systems:
            if system != "shoal" and n > args.peer_max.get(system, n):
                print(
                    f"skipping {system} at N={n}: above its limit of "
                    f"{args.peer_max[system]} (--peer-max {system}=N to change)",
                    flush=True,
                )
                continue
            print(f"running {system} with N={n} ...", flush=True)
            m = run_one(system, n, args.rounds, args.params, args)
            results[n][system] = m
            good = bool(m.report.get("correct"))
            ok &= good
            print(
                f"  {system} N={n}: wall {m.wall_s:.1f}s, cpu {m.cpu_s:.1f}s, "
                f"peak {m.peak_pss / 2**20:.0f} MB, "
                f"{'correct' if good else 'FAILED ' + (m.error or f'rc={m.rc}')}",
                flush=True,
            )
    print()
    print(table(results, systems))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    str(n): {
                        s: {
                            **m.report,
                            "wall_s": m.wall_s,
                            "cpu_s": m.cpu_s,
                            "peak_pss": m.peak_pss,
                            "error": m.error,
                        }
                        for s, m in by.items()
                    }
                    for n, by in results.items()
                },
                indent=2,
            )
        )
    return 0 if ok else 1


def aggregation_memory(args: argparse.Namespace) -> int:
    """N=1000 clients, a 10,000,000-parameter vector: the aggregator's own peak memory."""
    params, clients = 10_000_000, 1000
    m = run_one("shoal", clients, 1, params, args)
    model = params * 4
    peak = m.report.get("aggregator_peak_bytes")
    print(
        f"N={clients}, {params} float32 parameters ({model / 2**20:.0f} MB model), 1 round: "
        f"{'correct' if m.report.get('correct') else 'FAILED ' + m.error}"
    )
    if peak is None:
        return 1
    print(
        f"aggregator peak above its start: {peak / 2**20:.0f} MB = {peak / model:.2f}x the "
        f"model (target < 3x); whole tree peak PSS {m.peak_pss / 2**20:.0f} MB; "
        f"wall {m.wall_s:.1f}s"
    )
    return 0 if m.report.get("correct") and peak < 3 * model else 1


def _mem_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


if __name__ == "__main__":
    sys.exit(main())
