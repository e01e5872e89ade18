"""Train FedAvg on the digits dataset split over simulated nodes.

Loads scikit-learn's bundled digits (no download), keeps a seeded 20% aside as a
central test set, gives the other 80% to the simulator as the dataset "digits"
(partitioned over the nodes), and reports the final global model's accuracy on the
held-out test set.

    python examples/fedavg_digits/run.py [--nodes 10] [--partition dirichlet:0.5]
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

# This folder on the import path, however the script is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from swarm import FedAvgDigits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10, help="simulated nodes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--partition",
        default="dirichlet:0.5",
        help="how the data is split: iid, dirichlet:ALPHA or shards:K (default dirichlet:0.5)",
    )
    parser.add_argument(
        "--max-iterations", type=int, default=50, help="most FedAvg rounds (default 50)"
    )
    args = parser.parse_args(argv)

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)  # pixels 0..16 -> [0, 1]
    y = digits.target
    X_fed, X_test, y_fed, y_test = train_test_split(
        X, y, test_size=0.2, random_state=args.seed, stratify=y
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.npz"
        np.savez(path, X=X_fed, y=y_fed)
        try:
            run = shoal.simulate(
                FedAvgDigits(max_rounds=args.max_iterations, seed=args.seed),
                nodes=args.nodes,
                datasets={"digits": path},
                partition=args.partition,
                seed=args.seed,
            )
        except shoal.SwarmFailedError as failed:  # every failure's node and traceback
            print(failed, file=sys.stderr)
            return 1

    weights = run.globals["weights"]
    history = run.globals["val_history"]
    accuracy = np.mean(np.argmax(X_test @ weights["W"] + weights["b"], axis=1) == y_test)
    print(f"rounds: {len(history)}, last federated validation accuracy: {history[-1]:.3f}")
    print(f"test accuracy: {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
