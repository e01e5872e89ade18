"""NVIDIA FLARE child of ``bench/job_overhead.py``: the seed's FedJob on FLARE's simulator.

Runs inside the FLARE virtual environment (nvflare, torch, scikit-learn; no shoal). The
job is ``digits_job.build_job`` with FLARE's own classes, stock settings (FedAvg's
``task_check_period`` and the server's ``task_request_interval`` are FLARE's defaults),
run with ``job.simulator_run(workspace, threads=T)``: the sites are named with
``job.to(..., "site-i")``, and FLARE refuses ``n_clients`` then. Its simulator refuses
more than 100 clients (``simulator_run`` cannot raise that). The final global model is
the PTFileModelPersistor's ``FL_global_model.pt``; its test accuracy goes into the
report, with FLARE's version and the threads used.

    python nvflare_job.py --clients N --rounds R --threads T --jobdir D --workspace W --out r.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.metadata import version as dist_version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_job


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--jobdir", type=Path, required=True)
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    import torch
    from nvflare.app_common.widgets.intime_model_selector import IntimeModelSelector
    from nvflare.app_common.workflows.fedavg import FedAvg
    from nvflare.app_opt.pt.job_config.model import PTModel
    from nvflare.job_config.api import FedJob
    from nvflare.job_config.script_runner import ScriptRunner

    api = {
        "FedJob": FedJob,
        "FedAvg": FedAvg,
        "PTModel": PTModel,
        "IntimeModelSelector": IntimeModelSelector,
        "ScriptRunner": ScriptRunner,
    }
    os.chdir(args.jobdir)
    job = digits_job.build_job(api, digits_job.initial_net(args.jobdir), args.clients, args.rounds)
    report: dict[str, object] = {
        "system": "nvflare",
        "version": dist_version("nvflare"),
        "torch": torch.__version__,
        "threads": args.threads,
    }
    start = time.time()
    try:
        job.simulator_run(str(args.workspace), threads=args.threads)
    except Exception as e:  # the report says what happened
        report["error"] = f"{type(e).__name__}: {e}"
    report["run_s"] = time.time() - start
    report["end"] = time.time()
    found = sorted(args.workspace.rglob("FL_global_model.pt"))
    if found:
        data = torch.load(found[0], map_location="cpu", weights_only=False)
        state = data.get("model", data) if isinstance(data, dict) else data
        report["final_model"] = str(found[0])
        report["accuracy"] = digits_job.accuracy(args.jobdir, state, args.clients)
    else:
        report.setdefault("error", f"no FL_global_model.pt under {args.workspace}")
    digits_job.write_report(args.out, report)
    return 0 if "accuracy" in report and "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
