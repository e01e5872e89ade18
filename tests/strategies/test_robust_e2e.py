"""Robust aggregators under attack: 3 of 15 clients (20%) send scaled or random updates.

Plain FedAvg collapses; each robust rule stays within 0.05 of clean FedAvg's accuracy.
IID split: Krum and Bulyan pick among honest updates, which non-IID data makes disagree.
"""

from __future__ import annotations

import pytest
from helpers.digits import Digits, run_digits

from shoal.strategies import Bulyan, FedAvg, Krum, Median, MultiKrum, Strategy, TrimmedMean

pytestmark = pytest.mark.slow

BAD = ["node-00002", "node-00007", "node-00011"]  # 3 of 15
SETTING = {"nodes": 15, "rounds": 6, "partition": "iid"}


@pytest.fixture(scope="module")
def clean(digits: Digits) -> float:
    _, acc = run_digits(FedAvg(), digits, **SETTING)  # type: ignore[arg-type]
    assert acc >= 0.9
    return acc


@pytest.mark.parametrize("attack", ["scale", "random"])
def test_plain_fedavg_collapses_under_attack(attack: str, digits: Digits, clean: float) -> None:
    _, acc = run_digits(FedAvg(), digits, byzantine=BAD, attack=attack, **SETTING)  # type: ignore[arg-type]
    print(f"fedavg under {attack}: {acc:.3f} (clean {clean:.3f})")
    assert acc < clean - 0.2


@pytest.mark.parametrize("attack", ["scale", "random"])
@pytest.mark.parametrize(
    "strategy",
    [
        Median(),
        TrimmedMean(trim=0.2),
        Krum(byzantine=3),
        MultiKrum(byzantine=3, select=5),
        Bulyan(byzantine=3),
    ],
    ids=lambda s: s.name,
)
def test_robust_rule_stays_within_005_of_clean(
    strategy: Strategy, attack: str, digits: Digits, clean: float
) -> None:
    _, acc = run_digits(strategy, digits, byzantine=BAD, attack=attack, **SETTING)  # type: ignore[arg-type]
    print(f"{strategy.name} under {attack}: {acc:.3f} (clean {clean:.3f})")
    assert acc >= clean - 0.05
