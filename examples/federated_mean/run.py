"""Compute the count and mean of every column of the breast-cancer data, federated.

Splits scikit-learn's bundled breast-cancer table (569 rows, 30 features and the
target) over simulated nodes as the .csv dataset "cancer", runs the swarm, and compares
the result with pandas on the pooled table.

    python examples/federated_mean/run.py [--nodes 5] [--partition iid]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

import shoal

# This folder on the import path, however the script is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from swarm import FederatedMean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5, help="simulated nodes (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row split")
    parser.add_argument(
        "--partition", default="iid", help="iid, dirichlet:ALPHA or shards:K (default iid)"
    )
    args = parser.parse_args(argv)

    pooled = load_breast_cancer(as_frame=True).frame  # the features and a "target" column
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cancer.csv"
        pooled.to_csv(path, index=False)
        try:
            run = shoal.simulate(
                FederatedMean(),
                nodes=args.nodes,
                datasets={"cancer": path},
                partition=args.partition,
                seed=args.seed,
            )
        except shoal.SwarmFailedError as failed:  # every failure's node and traceback
            print(failed, file=sys.stderr)
            return 1

    count, mean = run.globals["count"], run.globals["mean"]
    columns = list(pooled.columns)
    expected_count = pooled.count()
    expected_mean = pooled.mean()
    width = max(len(c) for c in columns)
    print(f"{'column':<{width}}  {'count':>5}  {'federated mean':>15}  {'pandas mean':>15}")
    for col in columns:
        print(f"{col:<{width}}  {count[col]:>5}  {mean[col]:>15.6f}  {expected_mean[col]:>15.6f}")

    same_columns = set(count) == set(columns) == set(mean)
    ok = (
        same_columns
        and all(count[c] == expected_count[c] for c in columns)
        and np.allclose([mean[c] for c in columns], expected_mean[columns].to_numpy())
    )
    print("OK: federated count and mean equal pandas on the pooled data" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
