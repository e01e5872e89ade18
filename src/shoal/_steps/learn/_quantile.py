"""Federated quantiles in two rounds: global range, then a fine histogram on it.

Round 1: every node sends each column's min, max and count; the aggregator keeps the
global range. Round 2: every node sends, per column, the counts of its values in
``resolution`` equal-width bins over that range (counts only, never values). The
aggregator sums them and reads each order statistic off the cumulative counts: it is
placed inside the fine bin that holds it, so it is off by less than one bin width,
``(max - min) / resolution``. A quantile interpolated between two order statistics
(numpy's ``linear`` and ``averaged_inverted_cdf`` methods) is within the same bound of
the exact pooled quantile. The ranks are exact; 0 and 1 give the exact min and max.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Method = Literal["linear", "averaged_inverted_cdf"]


def local_range(x: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Round 1 of a node: per column, min, max and count of the non-missing values."""
    count = (~np.isnan(x)).sum(axis=0)
    lo = np.where(count > 0, np.min(np.where(np.isnan(x), np.inf, x), axis=0), 0.0)
    hi = np.where(count > 0, np.max(np.where(np.isnan(x), -np.inf, x), axis=0), 0.0)
    return {"min": lo.tolist(), "max": hi.tolist(), "count": count.tolist()}


def merge_range(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Round 1 of the aggregator: the global range of each column."""
    count = np.sum([s["count"] for s in stats], axis=0)
    los = [np.where(np.asarray(s["count"]) > 0, s["min"], np.inf) for s in stats]
    his = [np.where(np.asarray(s["count"]) > 0, s["max"], -np.inf) for s in stats]
    lo, hi = np.min(los, axis=0), np.max(his, axis=0)
    return {
        "min": np.where(count > 0, lo, 0.0).tolist(),
        "max": np.where(count > 0, hi, 0.0).tolist(),
        "count": count.tolist(),
    }


def _bins(x: np.ndarray[Any, Any], lo: float, hi: float, resolution: int) -> Any:
    width = (hi - lo) / resolution
    if width <= 0:
        return np.zeros_like(x, dtype=np.int64)
    return np.clip(np.floor((x - lo) / width), 0, resolution - 1).astype(np.int64)


def local_histogram(x: np.ndarray[Any, Any], rng: dict[str, Any], resolution: int) -> Any:
    """Round 2 of a node: per column, its counts in the fine bins of the global range."""
    out = np.zeros((x.shape[1], resolution), dtype=np.int64)
    for j in range(x.shape[1]):
        col = x[:, j][~np.isnan(x[:, j])]
        np.add.at(out[j], _bins(col, rng["min"][j], rng["max"][j], resolution), 1)
    return out


def quantiles(
    counts: np.ndarray[Any, Any], lo: float, hi: float, levels: Sequence[float], method: Method
) -> list[float]:
    """The quantiles at ``levels`` (in [0, 1]) of one column from its merged histogram."""
    n = int(counts.sum())
    if n == 0:
        return [float("nan")] * len(levels)
    resolution = len(counts)
    width = (hi - lo) / resolution
    cum = np.cumsum(counts)

    def order_stat(k: int) -> float:
        # The k-th smallest (0-based), spread evenly inside the fine bin that holds it.
        if k <= 0:
            return lo
        if k >= n - 1:
            return hi
        j = int(np.searchsorted(cum, k, side="right"))
        before = int(cum[j - 1]) if j > 0 else 0
        inside = (k - before + 0.5) / int(counts[j])
        return float(lo + (j + inside) * width)

    out = []
    for q in levels:
        if method == "linear":
            h = (n - 1) * q
            k = int(np.floor(h))
            frac = h - k
            v = (
                order_stat(k)
                if frac == 0
                else (1 - frac) * order_stat(k) + frac * order_stat(k + 1)
            )
        else:  # averaged_inverted_cdf
            g = n * q
            k = int(np.ceil(g)) - 1
            v = (
                (order_stat(k) + order_stat(k + 1)) / 2
                if g == int(g) and 0 < g < n
                else (order_stat(max(k, 0)))
            )
        out.append(float(v))
    return out
