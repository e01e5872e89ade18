"""The ledger both the node agent and the simulator enforce budgets with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shoal.privacy as privacy
from shoal import ShoalError
from shoal._privacy.ledger import Budget, Ledger
from shoal.privacy import Laplace

BUDGET = {"digits": Budget(epsilon=1.2, delta=1e-5)}


def test_spending_until_a_charge_would_exceed_the_budget(tmp_path: Path) -> None:
    ledger = Ledger(BUDGET, tmp_path / "ledger.json", owner="node 'site-a'")
    first = ledger.spend("digits", Laplace(0.5).charge(label="q1"))
    assert first["spent"] == pytest.approx(0.5, abs=1e-3)
    assert first["remaining"] == pytest.approx(0.7, abs=1e-3)
    ledger.spend("digits", Laplace(0.5).charge(label="q2"))
    with pytest.raises(ShoalError) as err:
        ledger.spend("digits", Laplace(0.5).charge(label="q3"))
    e = err.value
    assert e.code == "privacy.budget"
    assert "node 'site-a' refuses" in str(e) and "'digits' for q3" in str(e)
    assert "spent 1," in str(e) and "remaining 0.2" in str(e) and "budget of 1.2" in str(e)
    assert len(ledger.charges("digits")) == 2  # the refused charge is not recorded
    # A cheaper query still fits.
    ledger.spend("digits", Laplace(0.1).charge())
    assert ledger.spent("digits") == pytest.approx(1.1, abs=1e-3)


def test_the_ledger_persists_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    Ledger(BUDGET, path).spend("digits", Laplace(1.0).charge())
    again = Ledger(BUDGET, path)  # a restarted agent
    assert again.spent("digits") == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ShoalError, match=r"remaining 0\.2"):
        again.spend("digits", Laplace(0.5).charge())
    # A larger budget set by the owner applies to what was already spent.
    bigger = Ledger({"digits": Budget(3.0, 1e-5)}, path)
    assert bigger.spend("digits", Laplace(0.5).charge())["remaining"] == pytest.approx(1.5, 1e-3)


def test_a_damaged_ledger_is_refused_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    with pytest.raises(ShoalError) as err:
        Ledger(BUDGET, path)
    assert err.value.code == "privacy.ledger"
    path.write_text(json.dumps({"datasets": {"digits": [{"kind": "laplace"}]}}))
    with pytest.raises(ShoalError, match="damaged"):
        Ledger(BUDGET, path)


def test_datasets_without_a_budget_are_not_limited() -> None:
    ledger = Ledger(BUDGET)
    answer = ledger.spend("other", Laplace(0.01).charge())
    assert answer["budget_epsilon"] is None and ledger.spent("other") == 0.0
    assert privacy.epsilon(ledger.charges("other"), 1e-5) == 0.0
