"""shoal's differential privacy: mechanisms, an accountant, and node budgets.

- :class:`Laplace` and :class:`Gaussian` mechanisms, calibrated to a declared
  sensitivity; :func:`bounded_sum` and :func:`bounded_count` for queries with declared
  bounds.
- :func:`epsilon`: the privacy spent by a list of :class:`Charge`, composed by Google's
  dp-accounting library (Rényi DP), never by hand.
- :func:`spend`: spend from a dataset's budget on the node running the task. The node
  owner sets ``[privacy.DATASET] epsilon, delta`` in node.toml (``shoal.simulate(...,
  privacy=...)`` in the simulator); a charge past it is refused with the spent and
  remaining epsilon.

- Filters a site applies to what a task sends: :class:`ExcludeVars`,
  :class:`PercentilePrivacy`, :class:`Quantize`, :class:`DPNoise`.

DP-FedAvg is :class:`shoal.strategies.DPFedAvg`. Needs ``pip install 'shoal[privacy]'``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shoal._privacy.accounting import Charge
from shoal._privacy.accounting import epsilon as _epsilon
from shoal._public import publish as _publish
from shoal.privacy._filters import DPNoise, ExcludeVars, PercentilePrivacy, Quantize
from shoal.privacy._mechanisms import (
    Gaussian,
    Laplace,
    bounded_count,
    bounded_sum,
    clip_by_norm,
)

__all__ = [
    "Charge",
    "DPNoise",
    "ExcludeVars",
    "Gaussian",
    "Laplace",
    "PercentilePrivacy",
    "Quantize",
    "bounded_count",
    "bounded_sum",
    "clip_by_norm",
    "epsilon",
    "spend",
]


def epsilon(charges: Iterable[Charge], delta: float) -> float:
    """The ``epsilon`` at ``delta`` of ``charges`` composed, by dp-accounting's RDP
    accountant (the same computation a node's ledger makes).

    Parameters
    ----------
    charges
        e.g. ``[Gaussian(sigma=1.1).charge(count=10)]``.
    delta
        The target delta.
    """
    return _epsilon(charges, delta)


def spend(task: Any, dataset: str, charge: Charge) -> dict[str, Any]:
    """Spend ``charge`` from ``dataset``'s budget on the node running ``task``.

    Parameters
    ----------
    task
        The running :class:`shoal.runtime.Task` (``self``).
    dataset
        The dataset the mechanism reads.
    charge
        From a mechanism's ``charge()``.

    Returns
    -------
    dict
        ``{"dataset", "budget_epsilon", "delta", "spent", "remaining"}``.

    Raises
    ------
    shoal.ShoalError
        ``privacy.budget`` when the node refuses; the task fails with that message
        unless it catches it.
    """
    answer: dict[str, Any] = task.local.spend_privacy(dataset, charge.to_dict())
    return answer


_publish(__name__, globals(), __all__)
