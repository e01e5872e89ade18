"""The job dialect against NVIDIA FLARE 2.9: the seed's FedJob on both simulators.

The job is ``examples/fedjob_digits`` (seed 004's cifar10_fedavg on sklearn's 8x8
digits, a small CNN in torch on CPU): FedAvg(num_clients=N, num_rounds=R),
PTModel(Net()) after ``torch.manual_seed(0)``, IntimeModelSelector(key_metric=
"accuracy"), and a ScriptRunner per site running the example's Client-API script
(2 local epochs, batch 32, on site i's shard). Both systems run the very same job code
(``bench/peers/digits_job.py``) with their own classes, and the same script but for its
import line (see that module for the two small changes and why sites are named):

* shoal: ``FedJob(...).simulator_run(workspace, threads=W)`` from ``shoal.job``, in a
  child process (this file with ``--child``);
* NVIDIA FLARE: the same with ``nvflare.job_config.api.FedJob`` and friends, in its own
  virtual environment (nvflare==2.9.0, torch==2.13.0, scikit-learn; installed on first
  use under ``--cache``), ``simulator_run(workspace, threads=T)``
  (``bench/peers/nvflare_job.py``).

For every N the two run one after the other (``--repeat`` alternates them more times),
each bounded by ``--timeout`` and ``--mem-limit-gb``. Measured from outside
(``sim_overhead.measure``): wall time, CPU seconds and peak memory of the child's whole
process tree (FLARE's simulator starts one worker process per thread, each in its own
session), sampled every 50 ms (summed PSS, and summed RSS, which counts shared pages
once per process). From
the round clock in the script (``digits_job.round_figures``): start-up (launch to the
first site's first model), the first round, and the median of rounds 2..R-1 (the last
round's end is not seen by the clock). Last, each system's final global model is tested
on the 360 held-out digits.

    python bench/job_overhead.py                     # N = 10, 100; 5 rounds
    python bench/job_overhead.py --clients 2 --rounds 3 --systems shoal
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
import digits_job  # noqa: E402
from sim_overhead import Measured, _mem_gb, measure, peer_python  # noqa: E402

SYSTEMS = ("shoal", "nvflare")
FLARE_ENV = "nvflare-job"  # under --cache
FLARE_REQUIREMENTS = ["nvflare==2.9.0", "torch==2.13.0", "scikit-learn", "numpy"]
FLARE_CHILD = HERE / "peers" / "nvflare_job.py"


# --------------------------------------------------------------------------- shoal side
def run_shoal_child(args: argparse.Namespace) -> int:
    """The child process: the job through shoal.job's public API."""
    import torch

    import shoal
    from shoal.job import FedAvg, FedJob, IntimeModelSelector, PTModel, ScriptRunner

    api = {
        "FedJob": FedJob,
        "FedAvg": FedAvg,
        "PTModel": PTModel,
        "IntimeModelSelector": IntimeModelSelector,
        "ScriptRunner": ScriptRunner,
    }
    os.chdir(args.jobdir)
    job = digits_job.build_job(api, digits_job.initial_net(args.jobdir), args.clients, args.rounds)
    report: dict[str, Any] = {
        "system": "shoal",
        "version": shoal.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
    }
    start = time.time()
    try:
        run = job.simulator_run(str(args.workspace), threads=args.threads)
        report["status"] = run.status
        state = run.globals["weights"]
        report["accuracy"] = digits_job.accuracy(args.jobdir, state, args.clients)
    except Exception as e:  # the report says what happened
        report["error"] = f"{type(e).__name__}: {e}"
    report["run_s"] = time.time() - start
    report["end"] = time.time()
    digits_job.write_report(args.out, report)
    return 0 if "accuracy" in report else 1


# ------------------------------------------------------------------------- one run
def flare_threads(n: int, threads: int | None) -> int:
    """FLARE's simulator threads: one worker per client unless told (its default)."""
    return threads or n


def run_one(system: str, n: int, args: argparse.Namespace) -> Measured:
    """Run ``system`` at ``n`` clients in a fresh folder; the report has the clock's figures."""
    with tempfile.TemporaryDirectory(prefix=f"bench-job-{system}-") as tmp:
        root = Path(tmp)
        jobdir = digits_job.write_job_dir(root / "job", system)
        clock = root / "round_clock.txt"
        report = root / "report.json"
        common = ["--clients", str(n), "--rounds", str(args.rounds)]
        common += ["--jobdir", str(jobdir), "--workspace", str(root / "workspace")]
        common += ["--out", str(report)]
        if system == "shoal":
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *common]
            if args.shoal_workers:
                cmd += ["--threads", str(args.shoal_workers)]
        else:
            python = peer_python(FLARE_ENV, args.cache, FLARE_REQUIREMENTS)
            threads = flare_threads(n, args.flare_threads)
            cmd = [str(python), str(FLARE_CHILD), *common, "--threads", str(threads)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", digits_job.CLOCK_ENV: str(clock)}
        t0 = time.time()
        m = measure(cmd, report, args.timeout, env=env, mem_limit=int(args.mem_limit_gb * 2**30))
        end = m.report.get("end", t0 + m.wall_s)
        m.report.update(digits_job.round_figures(clock, t0, end))
        if m.rc and not m.error:
            m.error = m.report.get("error", f"rc={m.rc}")
        return m


# ---------------------------------------------------------------------------- report
FIGURES = (
    "per-round s (median 2..R-1)",
    "first round s",
    "start-up s",
    "total wall s",
    "CPU s",
    "peak PSS MB",
    "peak RSS MB (summed)",
    "final accuracy",
)


def figures(m: Measured) -> dict[str, float | None]:
    """The compared figures of one run (None where it did not produce them)."""
    r = m.report
    done = "accuracy" in r and not m.error
    return {
        "per-round s (median 2..R-1)": r.get("per_round_s"),
        "first round s": r.get("first_round_s"),
        "start-up s": r.get("startup_s"),
        "total wall s": m.wall_s if done else None,
        "CPU s": m.cpu_s if done else None,
        "peak PSS MB": m.peak_pss / 2**20 if m.peak_pss else None,
        "peak RSS MB (summed)": m.peak_rss / 2**20 if m.peak_rss else None,
        "final accuracy": r.get("accuracy"),
    }


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def outcome(m: Measured) -> str:
    """One word or line: what became of a run."""
    if "accuracy" in m.report and not m.error:
        return f"ok ({m.report.get('rounds_started', 0)} rounds started)"
    return f"FAILED: {m.error or m.rc} ({m.report.get('rounds_started', 0)} rounds started)"


def table(results: list[tuple[int, dict[str, Measured]]], systems: list[str]) -> str:
    """A markdown table: each figure per system and the FLARE/shoal ratio."""
    ratio = len(systems) == 2
    head = ["N", "figure", *systems, *(["nvflare/shoal"] if ratio else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, by in results:
        figs = {s: figures(by[s]) for s in systems if s in by}
        for name in FIGURES:
            row = [str(n), name, *[_fmt(figs[s][name]) if s in figs else "—" for s in systems]]
            if ratio:
                a = figs.get("shoal", {}).get(name)
                b = figs.get("nvflare", {}).get(name)
                row.append(f"{b / a:.2f}" if a and b is not None else "—")
            lines.append("| " + " | ".join(row) + " |")
        checks = "; ".join(f"{s}: {outcome(by[s])}" for s in systems if s in by)
        lines.append(f"| {n} | run | {checks} |" + " |" * (len(head) - 3))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", default="10,100", help="comma-separated N (default 10,100)")
    p.add_argument("--rounds", type=int, default=5, help="FedAvg rounds (default 5; >= 3)")
    p.add_argument("--systems", default="shoal,nvflare", help="shoal, nvflare or both")
    p.add_argument("--repeat", type=int, default=1, help="alternate the systems this often")
    p.add_argument("--shoal-workers", type=int, default=None, help="shoal's simulator workers")
    p.add_argument(
        "--flare-threads", type=int, default=None, help="FLARE simulator threads (default N)"
    )
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    p.add_argument(
        "--mem-limit-gb",
        type=float,
        default=10.0,
        help="stop a run whose summed PSS passes this (default 10; the machine is shared)",
    )
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "shoal-bench")
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--jobdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.clients = int(args.clients)
        return run_shoal_child(args)

    systems = [s for s in args.systems.split(",") if s]
    if not systems or set(systems) - set(SYSTEMS):
        p.error(f"--systems: choose from {SYSTEMS}")
    print(
        f"job: examples/fedjob_digits (FedAvg, digits CNN), {args.rounds} rounds; machine: "
        f"{os.cpu_count()} cores, {_mem_gb():.0f} GiB; {time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    results: list[tuple[int, dict[str, Measured]]] = []
    dump: list[dict[str, Any]] = []
    ok = True
    for n in [int(x) for x in args.clients.split(",")]:
        for rep in range(args.repeat):
            by: dict[str, Measured] = {}
            for system in systems if rep % 2 == 0 else systems[::-1]:
                print(f"running {system} with N={n} ...", flush=True)
                m = run_one(system, n, args)
                by[system] = m
                ok &= "accuracy" in m.report and not m.error
                f = figures(m)
                per_round = f["per-round s (median 2..R-1)"]
                print(
                    f"  {system} N={n}: wall {m.wall_s:.1f}s, start-up "
                    f"{_fmt(f['start-up s'])}s, per round {_fmt(per_round)}s, "
                    f"peak PSS {m.peak_pss / 2**20:.0f} MB, {outcome(m)}",
                    flush=True,
                )
                dump.append(
                    {
                        "clients": n,
                        **m.report,
                        "system": system,
                        "wall_s": m.wall_s,
                        "cpu_s": m.cpu_s,
                        "peak_pss": m.peak_pss,
                        "peak_rss": m.peak_rss,
                        "error": m.error,
                    }
                )
            results.append((n, by))
    print()
    print(table(results, systems))
    if args.json:
        args.json.write_text(json.dumps(dump, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
