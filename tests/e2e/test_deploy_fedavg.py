"""FedAvg on digits, deployed for real: ``shoal up`` with 3 node agents, ``shoal deploy``,
``shoal status --watch``, ``shoal results``; the final model is as good as the one
``shoal.simulate`` trains with the same swarm, seed and partition."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shoal
from shoal._define.loader import load_swarm

SWARM = Path(__file__).resolve().parents[2] / "examples" / "fedavg_digits" / "swarm.py"
NODES, PARTITION, SEED = 3, "dirichlet:0.5", 0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def digits(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """The federated 80% as a .npz, and the held-out 20%, split as run.py does."""
    sk = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split

    data = sk.load_digits()
    X = (data.data / 16.0).astype(np.float32)
    X_fed, X_test, y_fed, y_test = train_test_split(
        X, data.target, test_size=0.2, random_state=SEED, stratify=data.target
    )
    path = folder / "digits.npz"
    np.savez(path, X=X_fed, y=y_fed)
    return path, X_test, y_test


def accuracy(weights: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(X @ weights["W"] + weights["b"], axis=1) == y))


def test_deployed_fedavg_matches_the_simulator(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    t0 = time.monotonic()
    path, X_test, y_test = digits(tmp_path)
    up = start_up(
        *("--nodes", str(NODES), "--dataset", f"digits={path}"),
        *("--partition", PARTITION, "--seed", str(SEED)),
    )
    up.wait_ready()
    assert up.token not in up.stdout() and "credentials (mode 0600" in up.stdout()

    nodes = up.shoal("nodes")
    assert nodes.returncode == 0, up.diagnostics()
    assert all(f"node-0000{i}" in nodes.stdout for i in range(NODES))

    deployed = up.shoal("deploy", str(SWARM), "--seed", str(SEED))
    assert deployed.returncode == 0, deployed.stderr + up.diagnostics()
    swarm_id = deployed.stdout.strip()
    assert deployed.stdout == swarm_id + "\n"  # only the id: ID=$(shoal deploy ...)

    watched = up.shoal("status", swarm_id, "--watch", "--timeout", "150", timeout=170)
    assert watched.returncode == 0, watched.stdout + watched.stderr + up.diagnostics()
    assert "succeeded" in watched.stdout

    shown = up.shoal("results", swarm_id, "val_accuracy")
    assert shown.returncode == 0, shown.stderr
    assert "aggregator" in shown.stdout and "val_accuracy" in shown.stdout
    saved = up.shoal("results", swarm_id, "weights", "--alias", "worker", "-o", "w.json")
    assert saved.returncode == 0, saved.stderr
    assert "w.npz" in saved.stderr and "cannot be written as json" in saved.stderr
    with np.load(up.tmp / "w.npz") as npz:
        assert {f"node-0000{i}/W" for i in range(NODES)} <= set(npz.files)
        assert npz["node-00000/W"].shape == (64, 10)

    with shoal.Client(up.url, up.token) as client:
        weights = client.get_global(swarm_id, "weights")
        history = client.get_global(swarm_id, "val_history")
    deployed_acc = accuracy(weights, X_test, y_test)

    swarm, _ = load_swarm(str(SWARM))
    run = shoal.simulate(
        swarm, nodes=NODES, datasets={"digits": path}, partition=PARTITION, seed=SEED
    )
    assert run.ok, run.reason
    simulated_acc = accuracy(run.globals["weights"], X_test, y_test)

    assert deployed_acc >= 0.85
    assert abs(deployed_acc - simulated_acc) <= 0.01, (deployed_acc, simulated_acc)
    assert len(history) == len(run.globals["val_history"])

    assert up.signal() == 0
    up.assert_nothing_left()
    assert time.monotonic() - t0 < 200
