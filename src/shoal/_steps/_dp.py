"""``DP``: the differential-privacy spec an estimator's ``privacy=`` takes.

A spec names a mechanism of :mod:`shoal.privacy` (Laplace or Gaussian), its
``epsilon`` (and ``delta`` for Gaussian) and the declared bounds ``[lower, upper]`` the
estimator clips each value to. The estimator turns the bounds into its sensitivity
(:meth:`Estimator.sensitivity`); each node spends the mechanism's charge from its own
budget for the dataset (:func:`shoal.privacy.spend`) and adds the noise to its own
statistics before they leave the node (local DP).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
from pydantic import model_validator

from shoal._steps._entity import Entity, StepsError


class DP(Entity):
    """Differential privacy for one estimator: a mechanism and declared bounds.

    Parameters
    ----------
    mechanism
        ``"laplace"`` (pure ``epsilon``-DP, noise scaled to the L1 sensitivity) or
        ``"gaussian"`` (``(epsilon, delta)``-DP, noise scaled to the L2 sensitivity,
        calibrated by :class:`shoal.privacy.Gaussian`).
    epsilon
        The privacy parameter of one release, > 0.
    delta
        Gaussian only: in (0, 1).
    lower, upper
        The declared range of the estimator's feature: every value is clipped to it
        (Sum, Mean, Variance, GroupMean need it; counts and histograms do not).

    Examples
    --------
    >>> from shoal.steps import DP, MeanEstimator
    >>> est = MeanEstimator(feature="age", privacy=DP(epsilon=1.0, lower=0, upper=120))
    """

    mechanism: Literal["laplace", "gaussian"] = "laplace"
    epsilon: float
    delta: float | None = None
    lower: float | None = None
    upper: float | None = None

    @model_validator(mode="after")
    def _check(self) -> DP:
        where = f"DP(mechanism={self.mechanism!r}, epsilon={self.epsilon}, delta={self.delta})"
        if not self.epsilon > 0:
            raise StepsError(f"{where}: epsilon must be > 0", code="steps.privacy")
        if self.mechanism == "gaussian" and not (self.delta is not None and 0 < self.delta < 1):
            raise StepsError(
                f"{where}: the Gaussian mechanism needs 0 < delta < 1",
                code="steps.privacy",
                hint="pass delta=1e-5, or use mechanism='laplace'",
            )
        if self.mechanism == "laplace" and self.delta is not None:
            raise StepsError(
                f"{where}: the Laplace mechanism is pure epsilon-DP and takes no delta",
                code="steps.privacy",
                hint="drop delta, or use mechanism='gaussian'",
            )
        if (self.lower is None) != (self.upper is None):
            raise StepsError(
                f"DP(lower={self.lower}, upper={self.upper}): give both bounds or neither",
                code="steps.privacy",
            )
        if self.lower is not None and self.upper is not None and not self.lower <= self.upper:
            raise StepsError(
                f"DP(lower={self.lower}, upper={self.upper}): the bounds are reversed",
                code="steps.privacy",
                hint="pass lower <= upper",
            )
        return self

    def bound(self, who: str) -> float:
        """``max(|lower|, |upper|)``: the most one clipped value weighs."""
        if self.lower is None or self.upper is None:
            raise StepsError(
                f"{who}: differential privacy needs the feature's declared bounds",
                code="steps.privacy",
                hint="pass DP(..., lower=..., upper=...): values are clipped to them",
            )
        return max(abs(self.lower), abs(self.upper))

    def clip(self, values: Any) -> Any:
        """``values`` (a pandas Series) clipped to ``[lower, upper]`` (unchanged without bounds)."""
        if self.lower is None or self.upper is None:
            return values
        # numpy's clip: pandas' costs ~20x more, and a node may answer many queries.
        clipped = np.clip(values.to_numpy(dtype=np.float64), self.lower, self.upper)
        return type(values)(clipped, index=values.index, name=values.name)

    def mechanism_for(self, l1: float, l2: float) -> Any:
        """The :mod:`shoal.privacy` mechanism for a query of these sensitivities."""
        if self.mechanism == "laplace":
            return _mechanism("laplace", self.epsilon, None, l1)
        return _mechanism("gaussian", self.epsilon, self.delta, l2)


@functools.lru_cache(maxsize=64)
def _mechanism(kind: str, eps: float, delta: float | None, sensitivity: float) -> Any:
    # Calibrating a Gaussian asks dp-accounting (milliseconds): once per spec.
    from shoal.privacy import Gaussian, Laplace

    if kind == "laplace":
        return Laplace(epsilon=eps, sensitivity=sensitivity)
    return Gaussian(sensitivity=sensitivity, epsilon=eps, delta=delta)


def as_dp(value: Any) -> Any:
    """``privacy=``'s value: None, a :class:`DP`, or its fields as a dict."""
    if value is None or isinstance(value, DP):
        return value
    if isinstance(value, dict) and "kind" not in value:
        return DP(**value)
    if isinstance(value, dict):
        return Entity.from_spec(value)
    raise StepsError(
        f"privacy={value!r} is not a DP spec",
        code="steps.privacy",
        hint="pass privacy=DP(epsilon=1.0, lower=0, upper=100) (from shoal.steps)",
    )
