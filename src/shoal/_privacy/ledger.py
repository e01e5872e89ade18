"""The privacy ledger: per dataset, the budget its owner set and what was spent.

One class both the node agent (persisted in its ``state_dir``) and the simulator (one
ledger per virtual node, in memory) use, so a request is refused the same way on both.
Spent epsilon is recomputed from every charge recorded (:mod:`.accounting`), so it
composes tightly (Rényi DP), and a budget the owner changes applies to what was already
spent.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError
from shoal._privacy.accounting import Charge, epsilon

LEDGER_FILE = "privacy-ledger.json"


@dataclass(frozen=True)
class Budget:
    """A dataset's lifetime budget, set by its owner: ``(epsilon, delta)``-DP."""

    epsilon: float
    delta: float


class Ledger:
    """Budgets and charges per dataset; refuses a charge that would exceed a budget.

    Parameters
    ----------
    budgets
        Dataset name -> :class:`Budget`. A dataset without one has no limit (its
        charges are not recorded).
    path
        The JSON file the charges persist in (written atomically after every charge);
        None: in memory only.
    owner
        Who keeps it (a node id), for messages.
    """

    def __init__(
        self, budgets: Mapping[str, Budget], path: Path | None = None, owner: str = "node"
    ) -> None:
        self.budgets = dict(budgets)
        self.path = path
        self.owner = owner
        self._lock = threading.Lock()
        self._charges: dict[str, list[Charge]] = {}
        self._spent: dict[str, float] = {}  # epsilon of _charges, computed once
        if path is not None and path.exists():
            try:
                doc = json.loads(path.read_text())
                self._charges = {
                    name: [Charge.from_dict(c) for c in charges]
                    for name, charges in doc.get("datasets", {}).items()
                }
            except (ValueError, KeyError, TypeError) as e:
                # Never start from zero on a damaged ledger: that would reset the budget.
                raise ShoalError(
                    f"the privacy ledger {path} is damaged ({e})",
                    code="privacy.ledger",
                    hint="restore it from a backup; deleting it forgets every epsilon spent",
                ) from None

    def spent(self, dataset: str) -> float:
        """Epsilon spent on ``dataset`` so far, at its budget's delta (0 without one)."""
        budget = self.budgets.get(dataset)
        if budget is None:
            return 0.0
        if dataset not in self._spent:
            self._spent[dataset] = epsilon(self._charges.get(dataset, []), budget.delta)
        return self._spent[dataset]

    def charges(self, dataset: str) -> list[Charge]:
        """The charges recorded for ``dataset``, oldest first."""
        return list(self._charges.get(dataset, []))

    def spend(self, dataset: str, charge: Charge) -> dict[str, Any]:
        """Record ``charge`` against ``dataset``'s budget, or refuse it.

        Returns
        -------
        dict
            ``{"dataset", "budget_epsilon", "delta", "spent", "remaining"}`` after the
            charge (``budget_epsilon`` None: the dataset has no budget).

        Raises
        ------
        ShoalError
            ``privacy.budget`` (nothing recorded) when the charge would take the spent
            epsilon past the budget; the message gives the spent and remaining epsilon.
        """
        budget = self.budgets.get(dataset)
        if budget is None:
            return {
                "dataset": dataset,
                "budget_epsilon": None,
                "delta": None,
                "spent": 0.0,
                "remaining": None,
            }
        with self._lock:
            before = self._charges.get(dataset, [])
            spent = self.spent(dataset)
            after = epsilon([*before, charge], budget.delta)
            if after > budget.epsilon:
                raise ShoalError(
                    f"{self.owner} refuses to spend privacy budget on dataset {dataset!r}"
                    f"{f' for {charge.label}' if charge.label else ''}: it would bring epsilon "
                    f"to {after:.3g}, over the budget of {budget.epsilon:g} (delta "
                    f"{budget.delta:g}); spent {spent:.3g}, remaining "
                    f"{max(budget.epsilon - spent, 0.0):.3g}",
                    code="privacy.budget",
                    hint="ask less (more noise, fewer rounds), or ask the dataset's owner for "
                    "a larger [privacy] budget in node.toml",
                )
            self._charges[dataset] = [*before, charge]
            self._spent[dataset] = after
            self._save()
        return {
            "dataset": dataset,
            "budget_epsilon": budget.epsilon,
            "delta": budget.delta,
            "spent": after,
            "remaining": budget.epsilon - after,
        }

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"datasets": {k: [c.to_dict() for c in v] for k, v in self._charges.items()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)  # a crash leaves the old ledger or the new, never half
