"""Peer benchmark: the shoal FedAvg workload on Flower's Simulation Engine (Ray backend).

Run it inside a virtualenv that holds Flower, never shoal's own ``.venv``::

    python3 -m venv /root/.cache/shoal-bench/flower
    /root/.cache/shoal-bench/flower/bin/pip install 'flwr[simulation]' numpy
    /root/.cache/shoal-bench/flower/bin/python bench/peers/flower_run.py \\
        --clients 100 --rounds 10 --params 100000 --out result.json

Workload (identical to ``bench/workload``): FedAvg over one float32 vector of ``P``
parameters that starts at zeros. Client ``k`` (its ``partition-id``, 0..N-1) applies one
numpy op, ``w <- w - 0.01 * (w - k)``, and replies with ``num-examples = 1`` so Flower's
weighted FedAvg is the equal-weight mean. Every client trains in every round
(``fraction_train=1.0``, ``min_train_nodes = min_available_nodes = N``) and there is no
federated evaluation (``fraction_evaluate=0.0``: ``configure_evaluate`` returns no
messages). With ``m = (N - 1) / 2`` the global model after ``R`` rounds is
``m * (1 - 0.99**R)`` in every entry; the run is correct when all entries match it within
``rtol=1e-4``.

It uses Flower's Message API: a ``ServerApp`` whose ``main`` runs
``flwr.serverapp.strategy.FedAvg.start``, a ``ClientApp`` with a ``@train`` function, and
``flwr.simulation.run_simulation``. Flower itself is not patched; its in-memory grid polls
for replies every 0.1 s, and that latency is part of every round it reports.

How time is measured (``time.perf_counter``, all in the driver process):

* ``round_times``: a FedAvg subclass stamps the entry of ``configure_train`` (node
  sampling and message construction) and the exit of ``aggregate_train`` (the aggregated
  ArrayRecord exists). ``Strategy.start`` calls them back to back around
  ``grid.send_and_receive``, so the span covers the whole round: sampling, pushing N
  messages into the link state, Ray actors running every ClientApp, pulling the replies
  and the weighted average. It leaves out only the empty evaluate step and log calls.
* ``first_round_s``: process start (read from ``/proc/self/stat``, so interpreter start
  and imports count) to the end of round 1. It includes starting Ray and its actor pool.
* ``total_s``: process start to the return of ``run_simulation`` (Ray shut down).
  ``strategy_s`` is ``FedAvg.start`` alone.
* ``peak_pss_bytes``: with ``--mem-interval`` > 0 a thread samples the summed PSS of
  this process and all its descendants (Ray's GCS, raylet and worker actors) and keeps the
  peak; PSS counts shared pages, such as Ray's object store, once. The same thread adds
  up the tree's CPU time (``own_cpu_s``) and, from ``/proc/stat``, what the rest of the
  machine used meanwhile (``other_cpu_s``): a large ``other_cpu_s`` means the timings
  were taken on a shared, busy machine.

Ray backend: ``client_resources = {num_cpus: --cpus-per-client, num_gpus: 0}``; Ray's
``init_args`` are left at Flower's defaults (Flower's advice for speed) except a quieter
log level. Flower starts ``floor(CPUs / num_cpus)`` Ray actors (worker processes) and
runs one ClientApp at a time on each. Flower's own default is 2 CPUs per ClientApp (one
actor on a 2-core machine); its guide says to lower ``num_cpus`` while the CPUs are
under-used. The default here, ``auto``, takes what was fastest for this workload on a
2-core machine: 1.0 (2 actors) up to 100 clients, 0.25 (8 actors) above.

* N=10: rounds took 0.10 s or 0.21 s with either (the 0.1 s polling quantizes them), and
  round 1 ended at 8 s with 1.0 against 13-14 s with 0.25 (each actor costs a second or
  two of start-up).
* N=100: rounds took 0.76-0.98 s with 0.25, 0.5 or 1.0 alike and 2.5 s with 2.0; with 1.0
  round 1 ended at 7-9 s against 14-17 s.
* N=1000: rounds took about 9 s with 0.25, 12-13 s with 0.5, 25-28 s with 1.0 and 9.5 s
  with 0.125 (16 actors, whose start-up pushed round 1 to 60 s).

Exit status: 0 when the final model matches the closed form, 1 otherwise.
"""

from __future__ import annotations

import os

# Read by flwr at import time: no telemetry traffic (there is no network to send it to).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
# Opt in now to Ray's future default (no GPU here either way); silences a FutureWarning.
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

LEARNING_RATE = 0.01
RTOL = 1e-4
ATOL = 1e-6


def process_start_perf() -> float:
    """The ``time.perf_counter()`` value at which this process started (Linux).

    Falls back to "now" where ``/proc`` is unavailable.
    """
    now = time.perf_counter()
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return now
    age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    return now - max(age, 0.0)


T0 = process_start_perf()


@dataclass
class Timings:
    """Timestamps (``perf_counter``) collected while the ServerApp runs."""

    round_starts: list[float] = field(default_factory=list)
    round_ends: list[float] = field(default_factory=list)
    strategy_start: float = 0.0
    strategy_end: float = 0.0
    final: np.ndarray | None = None

    def round_times(self) -> list[float]:
        return [e - s for s, e in zip(self.round_starts, self.round_ends, strict=True)]


class TimedFedAvg(FedAvg):
    """Stock FedAvg that stamps each round's start and the moment its aggregate exists."""

    def __init__(self, timings: Timings, clients: int) -> None:
        super().__init__(
            fraction_train=1.0,  # every client in every round
            fraction_evaluate=0.0,  # no federated evaluation
            min_train_nodes=clients,
            min_available_nodes=clients,
        )
        self.timings = timings

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.timings.round_starts.append(time.perf_counter())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        out = super().aggregate_train(server_round, replies)
        self.timings.round_ends.append(time.perf_counter())
        return out


def build_client_app() -> ClientApp:
    """ClientApp: one step of "training" for client k = partition-id."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        k = float(context.node_config["partition-id"])
        w = msg.content.array_records["arrays"].to_numpy_ndarrays()[0]
        new_w = w - LEARNING_RATE * (w - k)  # float32 stays float32 (NEP 50)
        content = RecordDict(
            {
                "arrays": ArrayRecord([new_w]),
                "metrics": MetricRecord({"num-examples": 1}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def build_server_app(clients: int, rounds: int, params: int, timings: Timings) -> ServerApp:
    """ServerApp: stock FedAvg (through TimedFedAvg) from a zero vector."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = TimedFedAvg(timings, clients)
        initial = ArrayRecord([np.zeros(params, dtype=np.float32)])
        timings.strategy_start = time.perf_counter()
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds)
        timings.strategy_end = time.perf_counter()
        timings.final = result.arrays.to_numpy_ndarrays()[0]

    return app


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_tree(root: int) -> dict[int, int]:
    """``root`` and every process below it, each with its CPU time so far (ticks)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
        pid = int(entry.name)
        children.setdefault(ppid, []).append(pid)
        ticks[pid] = utime + stime
    out: dict[int, int] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        out[pid] = ticks.get(pid, 0)
        stack.extend(children.get(pid, []))
    return out


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _machine_busy_ticks() -> int:
    """CPU ticks every process on the machine has used since boot (idle, iowait left out)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]


class TreeSampler(threading.Thread):
    """Samples this process tree (the driver and every Ray process under it).

    Keeps the peak summed PSS, the peak process count and the CPU time each process
    was last seen with, and compares the tree's CPU time with the whole machine's, so
    a run that shared its CPUs with other work can be told apart.
    """

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_bytes = 0
        self.peak_procs = 0
        self._cpu_ticks: dict[int, int] = {}
        self._cpu_base = sum(_process_tree(os.getpid()).values())
        self._busy_start = _machine_busy_ticks()
        self._busy_end = self._busy_start
        self._stop_event = threading.Event()

    def sample(self) -> None:
        tree = _process_tree(os.getpid())
        self._cpu_ticks.update(tree)
        self.peak_bytes = max(self.peak_bytes, sum(_pss(p) for p in tree))
        self.peak_procs = max(self.peak_procs, len(tree))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()
        self._busy_end = _machine_busy_ticks()

    @property
    def own_cpu_s(self) -> float:
        """CPU seconds of this tree (a process's last ticks before it exited are lost)."""
        return (sum(self._cpu_ticks.values()) - self._cpu_base) / CLK_TCK

    @property
    def other_cpu_s(self) -> float:
        """CPU seconds the rest of the machine used while this ran."""
        busy = (self._busy_end - self._busy_start) / CLK_TCK
        return max(busy - self.own_cpu_s, 0.0)


def expected_value(clients: int, rounds: int) -> float:
    """Closed form of every entry of the final global model."""
    m = (clients - 1) / 2
    return m + (0.0 - m) * (1 - LEARNING_RATE) ** rounds


def auto_cpus_per_client(clients: int) -> float:
    """The fastest ``num_cpus`` per ClientApp found for this workload on 2 cores."""
    return 1.0 if clients <= 100 else 0.25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, required=True, help="N simulated SuperNodes")
    p.add_argument("--rounds", type=int, required=True, help="R FedAvg rounds")
    p.add_argument("--params", type=int, default=100_000, help="P float32 parameters")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    p.add_argument(
        "--cpus-per-client",
        type=float,
        default=None,
        help="Ray num_cpus per ClientApp; Flower runs floor(CPUs / this) actors "
        "(default: 1.0 up to 100 clients, 0.25 above)",
    )
    p.add_argument(
        "--mem-interval",
        type=float,
        default=0.5,
        help="period in s of the PSS / CPU sampling of the process tree; 0: off",
    )
    p.add_argument("--verbose", action="store_true", help="keep Flower's INFO logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpus_per_client is None:
        args.cpus_per_client = auto_cpus_per_client(args.clients)
    if not args.verbose:
        # Per-round INFO lines go; Flower's and Ray's warnings and errors stay.
        logging.getLogger("flwr").setLevel(logging.WARNING)

    load_start = os.getloadavg()[0]
    timings = Timings()
    sampler = TreeSampler(args.mem_interval) if args.mem_interval > 0 else None
    if sampler is not None:
        sampler.start()

    backend_config = {
        "client_resources": {"num_cpus": args.cpus_per_client, "num_gpus": 0.0},
        "init_args": {"logging_level": "ERROR", "log_to_driver": True},
    }
    run_simulation(
        server_app=build_server_app(args.clients, args.rounds, args.params, timings),
        client_app=build_client_app(),
        num_supernodes=args.clients,
        backend_config=backend_config,
    )
    t_end = time.perf_counter()
    if sampler is not None:
        sampler.stop()

    expected = expected_value(args.clients, args.rounds)
    final = timings.final
    correct = (
        final is not None
        and final.shape == (args.params,)
        and final.dtype == np.float32
        and bool(np.allclose(final, expected, rtol=RTOL, atol=ATOL))
    )
    round_times = timings.round_times()
    first = timings.round_ends[0] - T0 if timings.round_ends else None
    result = {
        "peer": "flower",
        "version": version("flwr"),
        "ray_version": version("ray"),
        "clients": args.clients,
        "rounds": args.rounds,
        "params": args.params,
        "cpus_per_client": args.cpus_per_client,
        "round_times": round_times,
        "first_round_s": first,
        "strategy_s": timings.strategy_end - timings.strategy_start,
        "total_s": t_end - T0,
        "peak_pss_bytes": sampler.peak_bytes if sampler is not None else None,
        "peak_procs": sampler.peak_procs if sampler is not None else None,
        "own_cpu_s": sampler.own_cpu_s if sampler is not None else None,
        "other_cpu_s": sampler.other_cpu_s if sampler is not None else None,
        "loadavg_1m": [load_start, os.getloadavg()[0]],
        "final_mean": float(np.mean(final, dtype=np.float64)) if final is not None else None,
        "expected": expected,
        "correct": correct,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    median = float(np.median(round_times)) if round_times else float("nan")
    print(
        f"flower N={args.clients} R={args.rounds} P={args.params}: "
        f"median round {median:.3f}s, first round at {first or float('nan'):.2f}s, "
        f"total {t_end - T0:.2f}s, correct={correct}",
        file=sys.stderr,
    )
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
