"""The digits data and a swarm of any shoal.strategies strategy over it (tests/strategies,
tests/privacy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import shoal
from shoal.strategies import Strategy

HERE = Path(__file__).resolve().parent


Digits = tuple[Path, np.ndarray, np.ndarray]


def digits_data(folder: Path) -> Digits:
    """(the federated share as .npz, test X, test y): a seeded 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.data / 16.0).astype(np.float64)
    X_fed, X_test, y_fed, y_test = train_test_split(
        X, d.target, test_size=0.2, random_state=0, stratify=d.target
    )
    path = folder / "digits.npz"
    np.savez(path, X=X_fed, y=y_fed)
    return path, X_test, y_test


class StrategyDigits(shoal.Swarm):
    """Softmax regression on digits: train_round workers, a library aggregator."""

    def __init__(
        self,
        strategy: Strategy,
        rounds: int,
        *,
        lr: float = 0.5,
        epochs: int = 1,
        byzantine: list[str] | None = None,
        attack: str = "scale",
        exclude: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.max_iterations = rounds
        self.set_global("weights", {"W": np.zeros((64, 10)), "b": np.zeros(10)})
        self.set_global("lr", lr)
        self.set_global("epochs", epochs)
        self.set_global("byzantine_nodes", byzantine or [])
        self.set_global("attack", attack)
        self.set_global("exclude", exclude or [])
        self.worker = shoal.Task(
            shoal.Module(HERE / "digits_worker.py", datasets=["digits"]), method="all"
        )
        self.aggregator = strategy.task(self)

    def execute(self) -> shoal.Task:
        return self.aggregator(self.worker())


def accuracy(weights: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of a softmax-regression model."""
    return float(np.mean(np.argmax(X @ weights["W"] + weights["b"], axis=1) == y))


def run_digits(
    strategy: Strategy,
    digits: Digits,
    *,
    nodes: int = 10,
    rounds: int = 8,
    partition: str = "dirichlet:0.5",
    privacy: dict[str, dict[str, float]] | None = None,
    ok: bool = True,
    **kw: object,
) -> tuple[shoal.SimulationRun, float]:
    """Simulate ``strategy`` on the digits (inline executor: fast) and test it."""
    path, X_test, y_test = digits
    run = shoal.simulate(
        StrategyDigits(strategy, rounds, **kw),  # type: ignore[arg-type]
        nodes=nodes,
        datasets={"digits": path},
        partition=partition,
        seed=0,
        executor="inline",
        privacy=privacy,
        raise_on_failure=ok,
    )
    if ok:
        assert run.ok, (run.reason, [f.traceback for f in run.failures])
    return run, accuracy(run.globals["weights"], X_test, y_test)
