"""Scalers whose statistics come from every node: min/max, and mean/variance (Chan)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shoal._steps.learn._base import FederatedTransformer, State


def _values(df: Any, columns: list[str]) -> np.ndarray[Any, Any]:
    return np.asarray(df[columns].to_numpy(dtype=np.float64))


def _nan_fill(x: np.ndarray[Any, Any], counts: np.ndarray[Any, Any], fill: float) -> Any:
    return np.where(counts > 0, x, fill).tolist()


class FederatedMinMaxScaler(FederatedTransformer):
    """Scale each column to ``feature_range`` with the global min and max.

    A node sends its per-column min, max and count of non-missing values; the fitted
    state (``data_min``, ``data_max``, ``scale``, ``min``) is scikit-learn's
    ``MinMaxScaler`` fitted on the pooled data (missing values ignored, like it).
    """

    feature_range: tuple[float, float] = (0.0, 1.0)

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """Per column: ``min``, ``max``, ``count`` of the non-missing values."""
        self._check(df)
        x = _values(df, self.features_in)
        count = (~np.isnan(x)).sum(axis=0)
        with np.errstate(all="ignore"):
            lo = np.where(count > 0, np.nanmin(np.where(np.isnan(x), np.inf, x), axis=0), 0.0)
            hi = np.where(count > 0, np.nanmax(np.where(np.isnan(x), -np.inf, x), axis=0), 0.0)
        return {"min": lo.tolist(), "max": hi.tolist(), "count": count.tolist()}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The global min and max, and the scale that maps them to ``feature_range``."""
        stats = self._stats(stats)
        count = np.sum([s["count"] for s in stats], axis=0)
        has = [np.asarray(s["count"]) > 0 for s in stats]
        lo = np.min([np.where(h, s["min"], np.inf) for s, h in zip(stats, has, strict=True)], 0)
        hi = np.max([np.where(h, s["max"], -np.inf) for s, h in zip(stats, has, strict=True)], 0)
        lo, hi = np.where(count > 0, lo, np.nan), np.where(count > 0, hi, np.nan)
        span = hi - lo
        # scikit-learn's _handle_zeros_in_scale: a constant column keeps scale 1.
        span = np.where((span == 0) | np.isnan(span), 1.0, span)
        a, b = self.feature_range
        scale = (b - a) / span
        return {
            "data_min": lo.tolist(),
            "data_max": hi.tolist(),
            "scale": scale.tolist(),
            "min": (a - np.nan_to_num(lo) * scale).tolist(),
            "n_samples": count.tolist(),
        }

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``x * scale + min`` per column."""
        f = self._fitted(fitted)
        self._check(df)
        out = df.copy()
        out[self.columns_out] = _values(df, self.features_in) * np.asarray(f["scale"]) + f["min"]
        return out


class FederatedStandardScaler(FederatedTransformer):
    """Centre and scale each column with the global mean and standard deviation.

    A node sends per column its count, mean and sum of squared deviations (M2); the
    aggregator combines them with Chan et al.'s parallel formula, which is exact up to
    rounding (no catastrophic cancellation of a raw sum of squares). The fitted ``mean``,
    ``var`` (ddof 0) and ``scale`` are scikit-learn's ``StandardScaler`` on the pooled data.
    """

    with_mean: bool = True
    with_std: bool = True

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """Per column: ``count``, ``mean`` and ``m2`` of the non-missing values."""
        self._check(df)
        x = _values(df, self.features_in)
        count = (~np.isnan(x)).sum(axis=0)
        safe = np.maximum(count, 1)
        mean = np.nansum(x, axis=0) / safe
        m2 = np.nansum((x - mean) ** 2, axis=0)
        return {"count": count.tolist(), "mean": mean.tolist(), "m2": m2.tolist()}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The pooled mean and variance (Chan's combination, node by node)."""
        stats = self._stats(stats)
        n = np.zeros(len(self.features_in))
        mean = np.zeros(len(self.features_in))
        m2 = np.zeros(len(self.features_in))
        for s in stats:
            nb, mb, m2b = (np.asarray(s[k], dtype=np.float64) for k in ("count", "mean", "m2"))
            total = n + nb
            safe = np.maximum(total, 1)
            delta = mb - mean
            mean = mean + delta * nb / safe
            m2 = m2 + m2b + delta**2 * n * nb / safe
            n = total
        var = m2 / np.maximum(n, 1)
        scale = np.sqrt(var)
        scale = np.where(scale == 0, 1.0, scale)
        return {
            "mean": _nan_fill(mean, n, float("nan")),
            "var": _nan_fill(var, n, float("nan")),
            "scale": scale.tolist(),
            "n_samples_seen": n.astype(np.int64).tolist(),
        }

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``(x - mean) / scale`` per column (each part as the flags say)."""
        f = self._fitted(fitted)
        self._check(df)
        x = _values(df, self.features_in)
        if self.with_mean:
            x = x - np.nan_to_num(np.asarray(f["mean"], dtype=np.float64))
        if self.with_std:
            x = x / np.asarray(f["scale"])
        out = df.copy()
        out[self.columns_out] = x
        return out
