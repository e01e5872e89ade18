"""The accountant is dp-accounting's own computation, not hand-written maths."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import pld

import shoal.privacy as privacy
from shoal._privacy.accounting import DISCRETIZATION
from shoal.privacy import Charge, Gaussian, Laplace


def _library(event: dp_accounting.DpEvent, delta: float, grid: float = DISCRETIZATION) -> float:
    acc = pld.PLDAccountant(value_discretization_interval=grid)
    acc.compose(event)
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize("k", [1, 5, 40, 300])
def test_epsilon_after_k_dp_fedavg_rounds_equals_the_library(k: int) -> None:
    rounds = [Gaussian(sigma=1.1).charge(label=f"round {i}") for i in range(k)]
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.1), k)
    assert privacy.epsilon(rounds, 1e-5) == _library(event, 1e-5)


@pytest.mark.parametrize("k", [1, 5])
def test_the_coarser_grid_agrees_with_the_librarys_default(k: int) -> None:
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.1), k)
    ours = privacy.epsilon([Gaussian(sigma=1.1).charge(count=k)], 1e-5)
    assert ours == pytest.approx(_library(event, 1e-5, grid=1e-4), rel=1e-3)
    assert ours >= _library(event, 1e-5, grid=1e-4) - 1e-9  # never below: pessimistic


def test_mixed_charges_equal_the_library_composition() -> None:
    charges = [
        Charge("gaussian", 2.0, sampling=0.1, count=50),
        Laplace(0.5).charge(),
        Laplace(0.5).charge(),
    ]
    event = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(2.0)), 50
            ),
            dp_accounting.SelfComposedDpEvent(dp_accounting.LaplaceDpEvent(2.0), 2),
        ]
    )
    assert privacy.epsilon(charges, 1e-6) == pytest.approx(_library(event, 1e-6), rel=1e-9)


def test_one_calibrated_gaussian_costs_its_epsilon_and_laplace_composes_additively() -> None:
    g = Gaussian(sensitivity=1.0, epsilon=1.0, delta=1e-5)
    assert privacy.epsilon([g.charge()], 1e-5) == pytest.approx(1.0, abs=1e-3)
    assert privacy.epsilon([Laplace(0.5).charge()] * 3, 1e-5) == pytest.approx(1.5, abs=1e-3)
    assert privacy.epsilon([], 1e-5) == 0.0
