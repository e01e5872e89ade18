"""Bins and imputed values from every node: KBinsDiscretizer, SimpleImputer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from shoal._steps.learn import _quantile as fq
from shoal._steps.learn._base import FederatedTransformer, State
from shoal._steps.learn._deps import LearnError
from shoal._steps.learn._scalers import _values


def _partial(state: State | None) -> dict[str, Any] | None:
    return None if state is None else state.get("_partial")


class FederatedKBinsDiscretizer(FederatedTransformer):
    """Ordinal bins, with edges from every node's data (scikit-learn's ``KBinsDiscretizer``).

    ``strategy="uniform"``: one round (global min and max); the edges are exactly
    scikit-learn's. ``strategy="quantile"``: two rounds (global range, then a histogram
    of ``resolution`` fine bins, counts only); each edge is within
    ``(max - min) / resolution`` of the exact pooled quantile that scikit-learn computes
    with the same ``quantile_method`` (see :mod:`._quantile`). Bins narrower than 1e-8
    are removed, like scikit-learn. One-hot output: chain a FederatedOneHotEncoder.
    """

    n_bins: int = 5
    strategy: Literal["uniform", "quantile"] = "uniform"
    quantile_method: fq.Method = "averaged_inverted_cdf"
    resolution: int = 4096

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        if self.n_bins < 2 or self.resolution < 1:
            raise LearnError(
                f"FederatedKBinsDiscretizer: n_bins={self.n_bins}, resolution={self.resolution}",
                code="learn.params",
                hint="give n_bins >= 2 and resolution >= 1",
            )

    def rounds(self) -> int:
        """1 for uniform bins, 2 for quantile bins."""
        return 1 if self.strategy == "uniform" else 2

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """Round 1: per-column range and count; round 2 (quantile): fine-bin counts."""
        self._check(df)
        x = _values(df, self.features_in)
        rng = _partial(state)
        if rng is None:
            return fq.local_range(x)
        return {"histogram": fq.local_histogram(x, rng, self.resolution)}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The global range (a partial state for quantile bins), then the bin edges."""
        stats = self._stats(stats)
        rng = _partial(state)
        if rng is None:
            rng = fq.merge_range(stats)
            if self.strategy == "quantile":
                return {"_partial": rng}
            edges = [
                np.linspace(lo, hi, self.n_bins + 1)
                for lo, hi in zip(rng["min"], rng["max"], strict=True)
            ]
        else:
            hist = np.sum([np.asarray(s["histogram"]) for s in stats], axis=0)
            levels = np.linspace(0, 1, self.n_bins + 1).tolist()
            edges = [
                np.asarray(fq.quantiles(hist[j], lo, hi, levels, self.quantile_method))
                for j, (lo, hi) in enumerate(zip(rng["min"], rng["max"], strict=True))
            ]
        kept = [e[np.ediff1d(e, to_begin=np.inf) > 1e-8] for e in edges]
        return {"bin_edges": [e.tolist() for e in kept], "n_bins": [len(e) - 1 for e in kept]}

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """Each value replaced by the index of its bin (a float, like scikit-learn)."""
        f = self._fitted(fitted)
        self._check(df)
        x = _values(df, self.features_in)
        out = df.copy()
        for j, dst in enumerate(self.columns_out):
            edges = np.asarray(f["bin_edges"][j])
            out[dst] = np.searchsorted(edges[1:-1], x[:, j], side="right").astype(np.float64)
        return out


class FederatedSimpleImputer(FederatedTransformer):
    """Fill missing values with a statistic of every node's data (``SimpleImputer``).

    ``mean``: exact (counts and sums). ``most_frequent``: exact (value counts; ties go to
    the smallest value, like scikit-learn). ``constant``: ``fill_value``, no round.
    ``median``: two rounds of :mod:`._quantile` (linear method, like numpy's median),
    within ``(max - min) / resolution`` of the exact pooled median.
    """

    strategy: Literal["mean", "median", "most_frequent", "constant"] = "mean"
    fill_value: float | str | None = None
    resolution: int = 4096

    def rounds(self) -> int:
        """0 for constant, 2 for median, else 1."""
        return {"constant": 0, "median": 2}.get(self.strategy, 1)

    def done(self, state: State | None) -> bool:
        """Constant needs no round."""
        return self.strategy == "constant" or super().done(state)

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """The node's statistics for the strategy (and round)."""
        self._check(df)
        if self.strategy == "most_frequent":
            counts = []
            for c in self.features_in:
                vc = df[c].dropna().value_counts()
                counts.append([[_plain(k), int(v)] for k, v in vc.items()])
            return {"value_counts": counts}
        x = _values(df, self.features_in)
        if self.strategy == "mean":
            return {"count": (~np.isnan(x)).sum(axis=0).tolist(), "sum": np.nansum(x, 0).tolist()}
        rng = _partial(state)
        if rng is None:
            return fq.local_range(x)
        return {"histogram": fq.local_histogram(x, rng, self.resolution)}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The fill value of each column (``statistics``), or the median's partial state."""
        stats = self._stats(stats)
        if self.strategy == "mean":
            n = np.sum([s["count"] for s in stats], axis=0)
            total = np.sum([s["sum"] for s in stats], axis=0)
            return {"statistics": np.where(n > 0, total / np.maximum(n, 1), np.nan).tolist()}
        if self.strategy == "most_frequent":
            values = []
            for j in range(len(self.features_in)):
                counter: Counter[Any] = Counter()
                for s in stats:
                    counter.update({k: v for k, v in s["value_counts"][j]})
                best = max(counter.values(), default=0)
                values.append(min((k for k, v in counter.items() if v == best), default=None))
            return {"statistics": values}
        rng = _partial(state)
        if rng is None:
            return {"_partial": fq.merge_range(stats)}
        hist = np.sum([np.asarray(s["histogram"]) for s in stats], axis=0)
        med = [
            fq.quantiles(hist[j], lo, hi, [0.5], "linear")[0]
            for j, (lo, hi) in enumerate(zip(rng["min"], rng["max"], strict=True))
        ]
        return {"statistics": med}

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` with each column's missing values filled."""
        self._check(df)
        if self.strategy == "constant":
            fills = [self.fill_value] * len(self.features_in)
        else:
            fills = self._fitted(fitted)["statistics"]
        out = df.copy()
        for src, dst, v in zip(self.features_in, self.columns_out, fills, strict=True):
            out[dst] = df[src].fillna(v)
        return out


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value the codec and JSON carry."""
    return value.item() if isinstance(value, np.generic) else value
