"""Calibrated noise mechanisms with declared bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal._errors import ShoalError
from shoal._privacy.accounting import Charge, _library


def _bad(message: str, hint: str) -> ShoalError:
    return ShoalError(message, code="privacy.mechanism", hint=hint)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    # Fresh OS entropy unless a test passes a seeded generator: DP noise must not be
    # predictable.
    return rng if rng is not None else np.random.default_rng()


@dataclass(frozen=True)
class Laplace:
    """The Laplace mechanism: ``epsilon``-DP for a query of L1 ``sensitivity``.

    Noise ``Laplace(0, b)`` with ``b = sensitivity / epsilon`` (variance ``2 b**2``).

    Parameters
    ----------
    epsilon
        The privacy parameter, > 0.
    sensitivity
        The most one record changes the query's value (L1 norm), > 0.
    """

    epsilon: float
    sensitivity: float = 1.0

    def __post_init__(self) -> None:
        if not self.epsilon > 0 or not self.sensitivity > 0:
            raise _bad(
                f"Laplace(epsilon={self.epsilon}, sensitivity={self.sensitivity})",
                "epsilon and sensitivity must be > 0",
            )

    @property
    def scale(self) -> float:
        """``b = sensitivity / epsilon``."""
        return self.sensitivity / self.epsilon

    def noise(self, shape: Any = (), rng: np.random.Generator | None = None) -> Any:
        """Draws of the noise."""
        return _rng(rng).laplace(0.0, self.scale, size=shape)

    def randomise(self, value: Any, rng: np.random.Generator | None = None) -> Any:
        """``value`` plus noise (of ``value``'s shape)."""
        value = np.asarray(value, dtype=np.float64)
        return value + self.noise(value.shape, rng)

    def charge(self, label: str = "") -> Charge:
        """What one use costs, for the node's ledger (:func:`spend`)."""
        return Charge("laplace", 1.0 / self.epsilon, label=label)


@dataclass(frozen=True)
class Gaussian:
    """The Gaussian mechanism for a query of L2 ``sensitivity``.

    Give either ``sigma`` (the noise std) or ``epsilon`` and ``delta``, from which
    sigma is calibrated by dp-accounting's analytic Gaussian mechanism
    (``dp_accounting.get_sigma_gaussian``, Balle & Wang 2018), valid for any epsilon.

    Parameters
    ----------
    sensitivity
        The most one record (or client) changes the query, in L2 norm, > 0.
    sigma
        The noise standard deviation.
    epsilon, delta
        The target ``(epsilon, delta)`` for one use.
    """

    sensitivity: float = 1.0
    sigma: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    _sigma: float = field(init=False, repr=False, default=0.0)

    def __post_init__(self) -> None:
        if not self.sensitivity > 0:
            raise _bad(f"Gaussian(sensitivity={self.sensitivity})", "sensitivity must be > 0")
        if self.sigma is not None:
            if self.epsilon is not None or self.delta is not None or not self.sigma > 0:
                raise _bad(
                    f"Gaussian(sigma={self.sigma}, epsilon={self.epsilon}, delta={self.delta})",
                    "give sigma > 0, or epsilon and delta, not both",
                )
            object.__setattr__(self, "_sigma", float(self.sigma))
            return
        if self.epsilon is None or self.delta is None or not self.epsilon > 0:
            raise _bad(
                f"Gaussian(epsilon={self.epsilon}, delta={self.delta})",
                "give sigma, or epsilon > 0 and 0 < delta < 1",
            )
        if not 0 < self.delta < 1:
            raise _bad(f"Gaussian(delta={self.delta})", "delta must be in (0, 1)")
        dp = _library()
        z = float(dp.get_sigma_gaussian(self.epsilon, self.delta))
        object.__setattr__(self, "_sigma", z * self.sensitivity)

    @property
    def std(self) -> float:
        """The noise standard deviation."""
        return self._sigma

    @property
    def noise_multiplier(self) -> float:
        """``std / sensitivity``: what the accountant needs."""
        return self._sigma / self.sensitivity

    def noise(self, shape: Any = (), rng: np.random.Generator | None = None) -> Any:
        """Draws of the noise."""
        return _rng(rng).normal(0.0, self._sigma, size=shape)

    def randomise(self, value: Any, rng: np.random.Generator | None = None) -> Any:
        """``value`` plus noise (of ``value``'s shape)."""
        value = np.asarray(value, dtype=np.float64)
        return value + self.noise(value.shape, rng)

    def charge(self, sampling: float = 1.0, count: int = 1, label: str = "") -> Charge:
        """What ``count`` uses cost (on a ``sampling`` fraction of records each)."""
        return Charge("gaussian", self.noise_multiplier, sampling, count, label)


Mechanism = Laplace | Gaussian


def bounded_sum(
    values: Any,
    lower: float,
    upper: float,
    mechanism: Mechanism,
    rng: np.random.Generator | None = None,
) -> float:
    """A DP sum of values declared to lie in ``[lower, upper]`` (clipped to it).

    Adding or removing one record changes the clipped sum by at most
    ``max(|lower|, |upper|)``: the mechanism's sensitivity must cover it.

    Raises
    ------
    ShoalError
        ``privacy.mechanism`` when the bounds are reversed or the mechanism's
        sensitivity is below what they imply.
    """
    if not lower <= upper:
        raise _bad(f"bounds [{lower}, {upper}] are reversed", "pass lower <= upper")
    needed = max(abs(lower), abs(upper))
    if mechanism.sensitivity < needed:
        raise _bad(
            f"a sum of values in [{lower}, {upper}] has sensitivity {needed}, but the "
            f"mechanism is calibrated for {mechanism.sensitivity}",
            f"build the mechanism with sensitivity={needed}",
        )
    total = float(np.clip(np.asarray(values, dtype=np.float64), lower, upper).sum())
    return float(mechanism.randomise(total, rng))


def bounded_count(
    count: int, mechanism: Mechanism, rng: np.random.Generator | None = None
) -> float:
    """A DP count (sensitivity 1)."""
    return float(mechanism.randomise(float(count), rng))


def clip_by_norm(vector: Any, clip: float) -> tuple[np.ndarray, bool]:
    """``vector`` scaled to L2 norm at most ``clip``, and whether it was within it."""
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if norm <= clip:
        return v, True
    return v * (clip / norm), False
