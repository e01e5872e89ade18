"""The seed's FedJob (``examples/fedjob_digits``) for ``bench/job_overhead.py``, either side.

Imported by both children of the benchmark: shoal's (shoal's environment) and NVIDIA
FLARE's (its own virtual environment, where shoal is not installed), so it imports
neither system: the caller passes the job API's classes in. What is shared:

* :func:`write_job_dir`: the job folder (``src/digits_fl.py``, ``src/net.py``) made from
  the example's files. The training script is the example's with three changes, the
  same for both systems except the first: FLARE's copy imports ``nvflare.client as
  flare`` (the example's own import line, ``shoal.job.client``, is the port's only
  change); ``flare.log("accuracy", ...)`` gets ``flare.AnalyticsDataType.SCALAR`` as its
  third argument, which FLARE 2.9 requires (``log() missing 1 required positional
  argument: 'data_type'`` aborts the job otherwise; shoal's ``log`` defaults it); and
  both get a round clock, one line after ``flare.receive()`` that appends
  ``round wall-clock-time`` to the file named by ``$BENCH_ROUND_CLOCK``.
* :func:`build_job`: the example's job code (FedAvg, PTModel(Net()), IntimeModelSelector,
  ScriptRunner) with the sites named by ``job.to(..., "site-i")``. The example writes
  ``job.to_clients(ScriptRunner(script_args="... --site {i}"))``: shoal fills ``{i}`` in
  per site, FLARE passes script arguments through literally (``TaskScriptRunner``), so
  under FLARE every site would get the string ``{i}``. Sending each site its own
  ScriptRunner is how FLARE's examples give sites different arguments and runs the same
  on both.
* :func:`accuracy` and :func:`round_figures`: the final model's test accuracy (the
  example's 360 held-out digits) and the figures read off the round clock.
"""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fedjob_digits"
CLOCK_ENV = "BENCH_ROUND_CLOCK"
SHOAL_IMPORT = "import shoal.job.client as flare  # was: import nvflare.client as flare\n"
FLARE_IMPORT = "import nvflare.client as flare\n"
RECEIVE = "        model = flare.receive()\n"
LOG = '        flare.log("accuracy", accuracy, global_step=model.current_round)\n'
LOG_TYPED = (
    '        flare.log("accuracy", accuracy, flare.AnalyticsDataType.SCALAR, '
    "global_step=model.current_round)\n"
)
CLOCK = (
    "        _bench_tick(model.current_round)  # added by bench/job_overhead.py\n"  # after RECEIVE
)
TICK = """

def _bench_tick(current_round: int) -> None:  # added by bench/job_overhead.py: round clock
    import os
    import time

    path = os.environ.get("BENCH_ROUND_CLOCK")
    if path:
        with open(path, "a") as clock:
            clock.write(f"{current_round} {time.time()}\\n")

"""
MAIN = "\ndef main() -> None:\n"


def write_job_dir(dest: Path, system: str) -> Path:
    """Write the job's ``src/`` under ``dest`` for ``system`` ("shoal" or "nvflare")."""
    script = (EXAMPLE / "src" / "digits_fl.py").read_text()
    for needed in (SHOAL_IMPORT, RECEIVE, LOG, MAIN):
        if script.count(needed) != 1:
            raise RuntimeError(
                f"{EXAMPLE / 'src' / 'digits_fl.py'} no longer has exactly one {needed!r}: "
                "update bench/peers/digits_job.py to the example"
            )
    if system == "nvflare":
        script = script.replace(SHOAL_IMPORT, FLARE_IMPORT)
    script = script.replace(RECEIVE, RECEIVE + CLOCK).replace(MAIN, TICK + MAIN)
    script = script.replace(LOG, LOG_TYPED)
    src = dest / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "digits_fl.py").write_text(script)
    shutil.copy2(EXAMPLE / "src" / "net.py", src / "net.py")
    return dest


def initial_net(job_dir: Path) -> Any:
    """The example's initial model: ``Net()`` right after ``torch.manual_seed(0)``."""
    import importlib
    import sys

    import torch

    sys.path.insert(0, str(job_dir / "src"))
    torch.manual_seed(0)
    return importlib.import_module("net").Net()


def build_job(api: dict[str, Any], net: Any, n_clients: int, num_rounds: int) -> Any:
    """The example's job (cwd: the job folder) with ``api``'s classes and ``net`` (Net())."""
    job = api["FedJob"](name="digits_fedavg")
    controller = api["FedAvg"](num_clients=n_clients, num_rounds=num_rounds)
    job.to_server(controller)
    job.to_server(api["PTModel"](net))
    job.to_server(api["IntimeModelSelector"](key_metric="accuracy"))
    for i in range(1, n_clients + 1):
        site = f"site-{i}"
        job.to("src/net.py", site)
        args = f"--batch_size 32 --site {i} --n_sites {n_clients}"
        runner = api["ScriptRunner"](script="src/digits_fl.py", script_args=args)
        job.to(runner, site)
    return job


def accuracy(job_dir: Path, state: dict[str, Any], n_clients: int) -> float:
    """Test accuracy of the model ``state`` (name -> array or tensor) on the held-out rows."""
    import importlib
    import sys

    import torch

    sys.path.insert(0, str(job_dir / "src"))
    fl = importlib.import_module("digits_fl")
    net = fl.Net()
    net.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()})
    (_, test) = fl.load(1, n_clients)
    return float(fl.evaluate(net, test))


def round_figures(clock: Path, t0: float, end: float) -> dict[str, Any]:
    """Start-up and round times from the round clock (times are ``time.time()``).

    A round starts when its first site receives the global model; round r's time is the
    start of round r+1 minus its own start, so the last round (whose end would include
    shutting down) is not timed. ``startup_s``: from the child process's launch (``t0``)
    to the first site's first model.
    """
    starts: dict[int, float] = {}
    if clock.is_file():
        for line in clock.read_text().splitlines():
            r, t = line.split()
            starts[int(r)] = min(float(t), starts.get(int(r), float("inf")))
    order = [starts[r] for r in sorted(starts)]
    rounds = [b - a for a, b in itertools.pairwise(order)]
    return {
        "rounds_started": len(order),
        "first_round_index": min(starts) if starts else None,
        "startup_s": order[0] - t0 if order else None,
        "round_times": rounds,
        "first_round_s": rounds[0] if rounds else None,
        "per_round_s": statistics.median(rounds[1:]) if len(rounds) > 1 else None,
        "after_last_start_s": end - order[-1] if order else None,
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    """The child's report, for the parent (JSON)."""
    out.write_text(json.dumps(report, indent=2))
