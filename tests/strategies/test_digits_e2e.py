"""Every strategy trains the digits model end to end in the simulator."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.digits import Digits, run_digits

from shoal.strategies import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Scaffold, Strategy


@pytest.mark.parametrize(
    ("strategy", "target"),
    [
        (FedAvg(), 0.90),
        (FedProx(mu=0.01), 0.90),
        (FedAvgM(lr=1.0, momentum=0.5), 0.90),
        (FedAdam(lr=0.05), 0.90),
        (FedYogi(lr=0.05), 0.90),
        (Scaffold(), 0.90),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_strategy_reaches_its_stated_accuracy_on_non_iid_digits(
    strategy: Strategy, target: float, digits: Digits
) -> None:
    t = time.monotonic()
    run, acc = run_digits(strategy, digits)
    print(f"{strategy.name}: test accuracy {acc:.3f} in {time.monotonic() - t:.1f}s")
    assert acc >= target
    history = run.globals["shoal.history.weights"]
    assert len(history) == 8 and history[-1]["accuracy"] > history[0]["accuracy"]


def test_server_state_lives_in_globals(digits: Digits) -> None:
    run, _ = run_digits(FedAdam(lr=0.05), digits, rounds=2)
    state = run.globals["shoal.strategy_state.weights"]
    assert set(state) == {"m", "v"} and state["m"].shape == (650,)
    run, _ = run_digits(Scaffold(), digits, rounds=2)
    assert np.abs(run.globals["shoal.scaffold.weights"]).sum() > 0
