"""Train FedAvg of a small CNN (PyTorch, CPU) on the digits split over simulated nodes.

Loads scikit-learn's bundled digits (no download), keeps a seeded 20% aside as a central
test set, gives the other 80% to the simulator as the dataset "digits" (partitioned
over the nodes), and reports the final global model's accuracy on the test set.

    python examples/fedavg_torch/run.py [--nodes 5] [--rounds 5] [--partition iid]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import shoal

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # swarm.py, however the script is started
sys.path.insert(0, str(HERE / "modules" / "worker"))  # model.py, for the test set
from model import count_correct, make_model  # noqa: E402
from swarm import FedAvgTorch  # noqa: E402


def digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as (X_fed, y_fed, X_test, y_test): pixels scaled to [0, 1]."""
    data = load_digits()
    X = (data.data / 16.0).astype(np.float32)
    X_fed, X_test, y_fed, y_test = train_test_split(
        X, data.target, test_size=0.2, random_state=seed, stratify=data.target
    )
    return X_fed, y_fed, X_test, y_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5, help="simulated nodes (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="FedAvg rounds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--partition", default="iid", help="iid, dirichlet:ALPHA or shards:K (default iid)"
    )
    args = parser.parse_args(argv)

    X_fed, y_fed, X_test, y_test = digits(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.npz"
        np.savez(path, X=X_fed, y=y_fed)
        run = shoal.simulate(
            FedAvgTorch(rounds=args.rounds, seed=args.seed),
            nodes=args.nodes,
            datasets={"digits": path},
            partition=args.partition,
            seed=args.seed,
        )
    if not run.ok:
        print(f"swarm {run.status}: {run.reason}", file=sys.stderr)
        for failure in run.failures:
            print(
                f"--- {failure.alias} on {failure.node_id}:\n{failure.traceback}", file=sys.stderr
            )
        return 1

    model = make_model(args.seed)
    model.load_state_dict(run.globals["weights"])
    curve = [m.value for m in run.metrics("val_accuracy", frame=False)]
    print("federated validation accuracy per round: " + ", ".join(f"{a:.3f}" for a in curve))
    print(f"test accuracy: {count_correct(model, X_test, y_test) / len(y_test):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
