"""NVIDIA FLARE peer for shoal's FedAvg benchmark.

Runs shoal's reference workload on NVFlare's simulator and writes one JSON
result. The workload: FedAvg over one float32 vector ``{"w": zeros(P)}``; client
``k`` (``site-1`` -> ``k = 0``) does ``w <- w - 0.01 * (w - k)`` and sends the
vector back; the server takes the equal-weight mean of all N clients (every
client takes part in every round, ``min_clients = N``); R rounds; no evaluation.
The closed form of the final global (all entries equal) is
``m + (0 - m) * 0.99**R`` with ``m = (N - 1) / 2``, checked with rtol 1e-4.

How the job is built and run
    * ``FedJob`` (``nvflare.job_config.api``) with ``min_clients = N``.
    * Server: ``TimedFedAvg``, a small subclass of the stock
      ``nvflare.app_common.workflows.fedavg.FedAvg`` controller (its built-in
      streaming weighted aggregation, unchanged). It builds the zero initial
      model itself (``load_model``) so the 100k-float vector is not written into
      the job's JSON config, and it replaces the per-round checkpoint write
      (``save_model``) with a timestamp, keeping only the final vector, which
      it saves with ``np.save`` after the last round; the driver reads that
      file for the correctness check.
    * Clients: ``ScriptRunner`` with ``framework=NUMPY``. The Client API script
      (``flare.init()``, ``flare.receive()``, ``flare.send(FLModel(...))``) is
      this same file run with ``--client``. By default it runs in-process
      (``launch_external_process=False``) inside the simulator's worker process
      for that client. Measured here (N=10, R=10): in-process and external
      process give the same total time (about 26 s); external has ~0.3 s
      shorter steady rounds but a ~4.5 s longer first round (one more Python
      process per client); at N=48 in-process wins everywhere, and when clients
      are swapped (threads < N) external would start two processes per task.
      ``--external-process`` switches.
    * Every client reports ``NUM_STEPS_CURRENT_ROUND = 1`` so FedAvg's
      weighting (aggregation weight x num steps) is equal for all clients.
    * ``job.simulator_run(workspace, n_clients=N, threads=T)`` in a temporary
      workspace, with NVFlare's own console output sent to a log file there.
      The simulator refuses more than 100 clients unless given ``-m``, which
      ``simulator_run`` does not pass, so for N > 100 the same job is written
      out with ``job.export_job`` and run with ``nvflare simulator ... -m N``.
    * Two documented NVFlare settings are lowered from their defaults, since
      at this workload they are nothing but idle waiting: the server's
      ``task_request_interval`` (2 s: how long a client waits after a task, or
      after "no task yet", before asking again) to 0.1 s, and the controller's
      ``task_check_period`` (0.5 s: how often it checks whether all results
      are in) to 0.05 s. With the defaults a round cannot take less than ~2 s
      (N=10: 2.6 s steady rounds vs 1.2 s). Both are flags; the values used go
      into the JSON. The in-process Client API's own 0.5 s result poll is a
      module constant in NVFlare and is left alone.

How time is measured
    Inside the server controller, with ``time.monotonic()``: the round clock
    starts when ``FedAvg.run`` asks for the initial model (just before round 0
    is sent out) and every ``save_model`` call (made by ``FedAvg.run`` once per
    round, after the aggregate of all N results is applied to the global model)
    ends one round and starts the next. A round's time therefore covers
    scatter, client training, gather and aggregation of the whole cohort. The
    first round also includes the client workers' start-up (their processes are
    launched while the server is already waiting), which is why it is reported
    separately as ``first_round_s``. ``total_s`` is the wall time of the
    ``simulator_run`` call in this process: job export, server and client
    start-up, all rounds and shutdown.

Simulator threads
    NVFlare's simulator runs each "thread" as a worker *process* that serves
    one client at a time. With ``threads == N`` every client keeps its own
    worker for the whole job (N=48: ~2 s rounds). With ``threads < N`` the
    worker is torn down and a fresh Python process is started for the next
    client after every single task, plus a fixed 1 s sleep per swap; on this
    2-core machine that is CPU-bound at ~0.45 s per client-task once
    threads >= 16 (N=48: ~21 s rounds for threads 16 or 24; N=10, threads=2:
    ~18 s rounds). But a worker must reach the server within a hard-coded
    10 s after it starts, and when ~100 start at once on 2 cores about half
    of them miss it and round 0 never completes (seen twice at N=100,
    threads=100; N=72, threads=72 was fine). Default: ``threads = N`` up to
    ``MAX_PERSISTENT_THREADS`` (72) and ``SWAP_THREADS`` (16) above it;
    ``--threads`` overrides.

Usage (inside the NVFlare virtualenv)::

    python nvflare_run.py --clients N --rounds R --params P --out result.json [--threads T]

Exit status 0 if the final model matches the closed form, 1 otherwise (2 if the
run failed or timed out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import psutil  # a dependency of nvflare
from nvflare.apis.fl_constant import FLMetaKey
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.fedavg import FedAvg

LEARNING_RATE = 0.01
RTOL = 1e-4
ATOL = 1e-6  # only matters when the expected value is 0 (N = 1)
MAX_PERSISTENT_THREADS = 72  # largest threads == N that started reliably here
SWAP_THREADS = 16  # above that: swapped workers; throughput is flat from 16 on
DEFAULT_TASK_REQUEST_INTERVAL = 0.1  # NVFlare's default: 2.0
DEFAULT_TASK_CHECK_PERIOD = 0.05  # NVFlare's default: 0.5
SIMULATOR_RUN_MAX_CLIENTS = 100  # the simulator's default max_clients
ROUND_LOG = "round_times.jsonl"
FINAL_MODEL = "final_w.npy"
CONSOLE_LOG = "simulator_console.log"


class TimedFedAvg(FedAvg):  # type: ignore[misc]  # nvflare ships no type hints
    """Stock FedAvg that times each round and keeps only the final global model.

    The constructor arguments are explicit (no ``**kwargs``) because FedJob
    serialises a controller into the job config from its ``__init__`` signature.

    Args:
        params: length of the float32 parameter vector ``w``.
        out_dir: directory (absolute) where the round log and final vector go.
        num_clients: clients sampled (all of them) every round.
        num_rounds: number of FedAvg rounds.
        persistor_id: left empty: no persistor; ``load_model``/``save_model`` below.
        task_check_period: how often ``FedAvg.run`` checks whether the round's
            results are all in (NVFlare's default 0.5 s).
    """

    def __init__(
        self,
        *,
        params: int,
        out_dir: str,
        num_clients: int,
        num_rounds: int,
        persistor_id: str = "",
        task_check_period: float = 0.5,
    ) -> None:
        super().__init__(
            num_clients=num_clients,
            num_rounds=num_rounds,
            persistor_id=persistor_id,
            task_check_period=task_check_period,
        )
        self.params = params
        self.out_dir = out_dir
        self._round_clock: float | None = None

    def load_model(self) -> FLModel:
        """Initial global model: zeros. Starts the clock of round 0."""
        os.makedirs(self.out_dir, exist_ok=True)
        model = FLModel(params={"w": np.zeros(self.params, dtype=np.float32)})
        self._round_clock = time.monotonic()
        return model

    def save_model(self, model: FLModel) -> None:
        """Called once per round after aggregation: close the round's timer."""
        now = time.monotonic()
        assert self._round_clock is not None
        elapsed = now - self._round_clock
        self._round_clock = now
        with open(os.path.join(self.out_dir, ROUND_LOG), "a", encoding="utf-8") as log:
            log.write(json.dumps({"round": self.current_round, "seconds": elapsed}) + "\n")
        if self.current_round == self.start_round + self.num_rounds - 1:
            np.save(os.path.join(self.out_dir, FINAL_MODEL), np.asarray(model.params["w"]))


def client_main() -> None:
    """Client API training script (runs in-process in each simulated client)."""
    import nvflare.client as flare

    flare.init()
    site = flare.get_site_name()
    k = np.float32(int(site.rsplit("-", 1)[1]) - 1)  # "site-1" -> 0
    lr = np.float32(LEARNING_RATE)
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        w = np.asarray(received.params["w"], dtype=np.float32)
        w = w - lr * (w - k)
        flare.send(FLModel(params={"w": w}, meta={FLMetaKey.NUM_STEPS_CURRENT_ROUND: 1}))


def expected_global(clients: int, rounds: int) -> float:
    """Closed form of every entry of the final global model."""
    m = (clients - 1) / 2.0
    return m + (0.0 - m) * (1.0 - LEARNING_RATE) ** rounds


def _kill_descendants() -> int:
    """SIGKILL every process this script started (directly or not); return how many."""
    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    return len(procs)


def run_simulation(
    args: argparse.Namespace, threads: int, workdir: Path
) -> tuple[float, bool, int]:
    """Build the FedJob and run it; return (wall seconds, timed out, return code)."""
    from nvflare.fuel.utils.constants import FrameworkType
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.script_runner import ScriptRunner

    out_dir = workdir / "bench_out"
    job = FedJob(name="shoal_bench_fedavg", min_clients=args.clients)
    controller = TimedFedAvg(
        params=args.params,
        out_dir=str(out_dir),
        num_clients=args.clients,
        num_rounds=args.rounds,
        task_check_period=args.task_check_period,
    )
    job.to_server(controller)
    if args.task_request_interval > 0:
        # Server config knob (default 2 s): how long a client waits after a task,
        # or after "no task yet", before asking the server for the next one.
        job.to_server({"server": {"task_request_interval": args.task_request_interval}})
    job.to_clients(
        ScriptRunner(
            script=str(Path(__file__).resolve()),
            script_args="--client",
            framework=FrameworkType.NUMPY,
            launch_external_process=args.external_process,
            command=f"{sys.executable} -u",
        )
    )

    result: dict[str, Any] = {}

    def target() -> None:
        if args.clients <= SIMULATOR_RUN_MAX_CLIENTS:
            result["rc"] = job.simulator_run(
                str(workdir / "simulator"),
                n_clients=args.clients,
                threads=threads,
                log_config=args.log_config,
            )
            return
        # simulator_run() cannot raise the simulator's max_clients (100); the
        # CLI can: export the very same job and run `nvflare simulator -m N`.
        job.export_job(str(workdir / "job"))
        command = [sys.executable, "-m", "nvflare.cli", "simulator"]
        command += [str(workdir / "job" / job.name), "-w", str(workdir / "simulator")]
        command += ["-n", str(args.clients), "-t", str(threads), "-m", str(args.clients)]
        command += ["-l", args.log_config]
        result["rc"] = subprocess.run(command, check=False).returncode

    # Send NVFlare's (very chatty) console output to a file; restore afterwards.
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    log_fd = os.open(workdir / CONSOLE_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        start = time.monotonic()
        runner = threading.Thread(target=target, daemon=True)
        runner.start()
        runner.join(args.timeout)
        timed_out = runner.is_alive()
        if timed_out:
            _kill_descendants()
            runner.join(10)
        wall = time.monotonic() - start
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
    return wall, timed_out, int(result.get("rc", -1) or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--client", action="store_true", help="internal: run as the client training script"
    )
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("nvflare_result.json"))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"simulator threads (default N if N <= {MAX_PERSISTENT_THREADS}, else {SWAP_THREADS})",
    )
    parser.add_argument(
        "--task-request-interval",
        type=float,
        default=DEFAULT_TASK_REQUEST_INTERVAL,
        help="server.task_request_interval in seconds (NVFlare's default: 2; 0 leaves it unset)",
    )
    parser.add_argument(
        "--task-check-period",
        type=float,
        default=DEFAULT_TASK_CHECK_PERIOD,
        help="FedAvg controller's result-check period in seconds (NVFlare's default: 0.5)",
    )
    parser.add_argument(
        "--external-process",
        action="store_true",
        help="run the client script in its own process (ScriptRunner launch_external_process=True)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="kill the simulation after this many seconds"
    )
    parser.add_argument(
        "--log-config", default="concise", help="NVFlare simulator log config (concise, full, ...)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the workspace here instead of a temp dir"
    )
    args = parser.parse_args()

    if args.client:
        client_main()
        return 0

    threads = args.threads or (
        args.clients if args.clients <= MAX_PERSISTENT_THREADS else SWAP_THREADS
    )
    workdir = (
        args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="nvflare-bench-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        wall, timed_out, rc = run_simulation(args, threads, workdir)
        leftover = _kill_descendants()

        out_dir = workdir / "bench_out"
        round_log = out_dir / ROUND_LOG
        round_times = (
            [
                json.loads(line)["seconds"]
                for line in round_log.read_text().splitlines()
                if line.strip()
            ]
            if round_log.exists()
            else []
        )
        expected = expected_global(args.clients, args.rounds)
        final_path = out_dir / FINAL_MODEL
        final_mean: float | None = None
        correct = False
        if final_path.exists():
            w = np.load(final_path)
            final_mean = float(np.mean(w, dtype=np.float64))
            correct = bool(
                w.shape == (args.params,) and np.allclose(w, expected, rtol=RTOL, atol=ATOL)
            )

        report: dict[str, Any] = {
            "peer": "nvflare",
            "version": dist_version("nvflare"),
            "clients": args.clients,
            "rounds": args.rounds,
            "params": args.params,
            "round_times": round_times,
            "first_round_s": round_times[0] if round_times else None,
            "total_s": wall,
            "final_mean": final_mean,
            "expected": expected,
            "correct": correct,
            "threads": threads,
            "launcher": (
                "FedJob.simulator_run"
                if args.clients <= SIMULATOR_RUN_MAX_CLIENTS
                else "FedJob.export_job + nvflare simulator -m N"
            ),
            "client_executor": "external_process" if args.external_process else "in_process",
            "task_check_period": args.task_check_period,
            "task_request_interval": args.task_request_interval or 2.0,
            "rounds_completed": len(round_times),
            "timed_out": timed_out,
            "simulator_rc": rc,
            "leftover_processes_killed": leftover,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report))
        if not final_path.exists() or timed_out:
            log_path = workdir / CONSOLE_LOG
            if log_path.exists():
                tail = log_path.read_text(errors="replace")[-4000:]
                print(f"--- tail of {log_path} ---\n{tail}", file=sys.stderr)
            return 2
        return 0 if correct else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    # No sys.exit(0): in client mode this file runs inside NVFlare's worker via runpy.
    exit_code = main()
    if exit_code:
        sys.exit(exit_code)
