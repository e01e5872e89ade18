"""Filters: small transformations a site applies to what a task sends (or receives).

Each is a callable on a value (an array, or a dict of arrays such as a model update)
that returns the filtered value of the same structure. They are independent of any
dialect: :func:`shoal.strategies.train_round` applies them to a worker's update with
``filters=[...]``, and any task can call them on what it publishes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal._errors import ShoalError
from shoal._privacy.accounting import Charge
from shoal.privacy._mechanisms import Gaussian


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(np.asarray(value))


def _arrays(value: Any) -> list[np.ndarray]:
    if isinstance(value, Mapping):
        return [a for v in value.values() for a in _arrays(v)]
    return [np.asarray(value, dtype=np.float64).ravel()]


@dataclass(frozen=True)
class ExcludeVars:
    """Drop (or zero) the named entries of a dict value: they never leave the site.

    Parameters
    ----------
    names
        Keys to exclude, or regular expressions matched against the whole key.
    zero
        Keep the keys with zeros instead (an aggregator that expects every key then
        averages a zero update for them).
    """

    names: tuple[str, ...]
    zero: bool = False

    def __call__(self, value: Mapping[str, Any]) -> dict[str, Any]:
        """The value without (or with zeroed) excluded keys."""
        patterns = [re.compile(n) for n in self.names]
        out: dict[str, Any] = {}
        for k, v in value.items():
            if any(p.fullmatch(k) for p in patterns):
                if self.zero:
                    out[k] = np.zeros_like(np.asarray(v))
                continue
            out[k] = v
        return out


@dataclass(frozen=True)
class PercentilePrivacy:
    """Share only the largest values, clipped (Shokri & Shmatikov 2015, as in NVIDIA
    FLARE): entries whose magnitude is below the ``percentile``-th percentile of all
    magnitudes become 0; the rest are clipped to ``[-gamma, gamma]``.

    Parameters
    ----------
    percentile
        In ``[0, 100]``: 90 shares the top 10% of entries.
    gamma
        The clip bound, > 0.
    """

    percentile: float = 90.0
    gamma: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.percentile <= 100 or not self.gamma > 0:
            raise ShoalError(
                f"PercentilePrivacy(percentile={self.percentile}, gamma={self.gamma})",
                code="privacy.mechanism",
                hint="percentile in [0, 100], gamma > 0",
            )

    def __call__(self, value: Any) -> Any:
        """The filtered value."""
        cutoff = float(np.percentile(np.abs(np.concatenate(_arrays(value))), self.percentile))

        def one(a: np.ndarray) -> np.ndarray:
            a = np.asarray(a, dtype=np.float64)
            kept = np.where(np.abs(a) >= cutoff, a, 0.0)
            return np.asarray(np.clip(kept, -self.gamma, self.gamma))

        return _map(value, one)


@dataclass(frozen=True)
class Quantize:
    """Uniform quantisation to ``bits`` bits per entry, per array (min-max scaling).

    :meth:`encode` gives what would be sent (integers plus each array's range),
    :meth:`decode` what the receiver gets back; calling the filter does both, so the
    value carries exactly the quantisation error (at most half a step, ``(max - min) /
    (2**bits - 1) / 2``).

    Parameters
    ----------
    bits
        8 or 16.
    """

    bits: int = 8

    def __post_init__(self) -> None:
        if self.bits not in (8, 16):
            raise ShoalError(
                f"Quantize(bits={self.bits})", code="privacy.mechanism", hint="bits is 8 or 16"
            )

    def encode(self, value: Any) -> Any:
        """``{"q": integer array, "lo": min, "hi": max, "dtype": original}`` per array."""
        dtype = np.uint8 if self.bits == 8 else np.uint16
        levels = 2**self.bits - 1

        def one(a: np.ndarray) -> dict[str, Any]:
            lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
            span = hi - lo or 1.0
            q = np.round((a.astype(np.float64) - lo) / span * levels).astype(dtype)
            return {"q": q, "lo": lo, "hi": hi, "dtype": a.dtype.str}

        return _map(value, one)

    def decode(self, encoded: Any) -> Any:
        """The arrays :meth:`encode` stood for (with its rounding)."""
        levels = 2**self.bits - 1
        if isinstance(encoded, Mapping) and "q" not in encoded:
            return {k: self.decode(v) for k, v in encoded.items()}
        span = (encoded["hi"] - encoded["lo"]) or 1.0
        a = encoded["q"].astype(np.float64) / levels * span + encoded["lo"]
        return a.astype(np.dtype(encoded["dtype"]))

    def __call__(self, value: Any) -> Any:
        """``decode(encode(value))``."""
        return self.decode(self.encode(value))


@dataclass(frozen=True)
class DPNoise:
    """Local DP on a result: clip its whole L2 norm to ``clip`` and add Gaussian noise
    of std ``noise_multiplier * clip`` to every entry.

    The release is then a Gaussian mechanism of that multiplier; spend
    :meth:`charge` from the node's budget first (:func:`shoal.privacy.spend`).

    Parameters
    ----------
    clip
        L2 bound of the whole value, > 0.
    noise_multiplier
        Noise std over ``clip``, > 0.
    """

    clip: float
    noise_multiplier: float
    rng: np.random.Generator | None = field(default=None, compare=False, repr=False)

    def charge(self, label: str = "") -> Charge:
        """What one filtered release costs."""
        return Charge("gaussian", self.noise_multiplier, label=label)

    def __call__(self, value: Any) -> Any:
        """The clipped, noised value."""
        norm = float(np.linalg.norm(np.concatenate(_arrays(value))))
        scale = min(1.0, self.clip / norm) if norm > 0 else 1.0
        rng = self.rng if self.rng is not None else np.random.default_rng()
        gauss = Gaussian(sensitivity=self.clip, sigma=self.noise_multiplier * self.clip)
        return _map(value, lambda a: gauss.randomise(a.astype(np.float64) * scale, rng))


def apply(filters: Iterable[Any], value: Any) -> Any:
    """``value`` through each filter in turn."""
    for f in filters:
        value = f(value)
    return value
