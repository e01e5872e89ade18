"""The seed's cifar10_fedavg job on digits: FLARE's job code, import lines changed.

python examples/fedjob_digits/job.py            # simulator_run, prints the accuracy
python examples/fedjob_digits/job.py --export /tmp/jobs   # export_job only
"""

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "src"))
os.chdir(HERE)  # the job's paths are relative to the example, as in FLARE's examples

from net import Net  # noqa: E402

from shoal.job import FedAvg, FedJob, IntimeModelSelector, PTModel, ScriptRunner  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", default=None)
    ap.add_argument("--workspace", default="/tmp/shoal/jobs/workdir")
    ap.add_argument("--rounds", type=int, default=5)
    cli = ap.parse_args()

    import torch

    torch.manual_seed(0)
    n_clients = 2
    num_rounds = cli.rounds
    train_script = "src/digits_fl.py"

    job = FedJob(name="digits_fedavg")
    controller = FedAvg(num_clients=n_clients, num_rounds=num_rounds)
    job.to_server(controller)
    job.to_server(PTModel(Net()))
    job.to_server(IntimeModelSelector(key_metric="accuracy"))
    job.to_clients("src/net.py")
    runner = ScriptRunner(
        script=train_script, script_args=f"--batch_size 32 --site {{i}} --n_sites {n_clients}"
    )
    job.to_clients(runner)

    if cli.export:
        print("exported to", job.export_job(cli.export))
    else:
        run = job.simulator_run(cli.workspace, n_clients=n_clients)
        history = run.globals.get("shoal.history.weights") or {}
        print("metrics per round:", history)
        (Xte, yte) = __import__("digits_fl").load(1, n_clients)[1]
        net = Net()
        net.load_state_dict({k: torch.tensor(v) for k, v in run.globals["weights"].items()})
        with torch.no_grad():
            acc = float((net(Xte).argmax(1) == yte).float().mean())
        print(f"final test accuracy: {acc:.4f}")
