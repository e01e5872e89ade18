"""Estimators: exact federated statistics (count, mean, sum, variance, histogram,
group count and mean) and an approximate quantile with a stated error bound.

Each node computes :meth:`Estimator.local` on its (queried) frame: aggregates only,
never rows. The initiator combines them with :meth:`Estimator.merge`. Group keys are
merged by value, so a key first seen at a later node is counted like any other.
``privacy=`` is the hook for differential privacy; only None (exact) exists yet.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from pydantic import field_validator

from shoal._steps._entity import DUMP, LOAD, Entity, StepsError
from shoal._steps._operation import Environment, Operation
from shoal._steps._query import Query, QueryFilter, as_query, require_columns

Stats = Any


def _py(value: Any) -> Any:
    """A numpy scalar as a plain Python value (msgpack- and JSON-safe)."""
    return value.item() if hasattr(value, "item") else value


class Estimator(Entity):
    """Base of every estimator.

    Parameters
    ----------
    query
        A :class:`Query` (or one filter) applied to each node's frame first.
    privacy
        Reserved for differential privacy; anything but None is refused for now.
    """

    query: Annotated[Query | None, LOAD, DUMP] = None
    privacy: Any = None

    @field_validator("query", mode="before")
    @classmethod
    def _as_query(cls, value: Any) -> Any:
        return as_query(value) if isinstance(value, QueryFilter) else value

    @field_validator("privacy")
    @classmethod
    def _no_privacy_yet(cls, value: Any) -> Any:
        if value is not None:
            raise StepsError(
                f"{cls.__name__}(privacy={value!r}): differentially private estimators "
                "are not available yet",
                code="steps.privacy",
                hint="leave privacy=None for exact results",
            )
        return value

    def frame(self, df: Any) -> Any:
        """The node's frame after the query."""
        return df if self.query is None else self.query.apply(df)

    def local(self, df: Any) -> Stats:
        """This node's aggregates (already queried ``df``)."""
        raise NotImplementedError

    def merge(self, stats: list[Stats]) -> Any:
        """The result from every node's aggregates."""
        raise NotImplementedError

    def _col(self, df: Any, feature: str) -> Any:
        require_columns(df, [feature], type(self).__name__)
        return df[feature].dropna()

    def artifact(self, dataset: str, initiator: str | None = None, name: str = "") -> Any:
        """The two-step artifact: every node's aggregates, combined on the initiator.

        Its Finalize writes the global ``"result"``.
        """
        from shoal._steps._artifact import Artifact, Collect, Finalize, Parallel

        return Artifact(
            steps=[
                Parallel(operation=Estimate(estimator=self), distribution=Collect()),
                Finalize(operation=Aggregate(estimator=self)),
            ],
            dataset=dataset,
            initiator=initiator,
            name=name or type(self).__name__.lower(),
        )


_Est = Annotated[Estimator, LOAD, DUMP]


class Estimate(Operation):
    """Runs an estimator's :meth:`~Estimator.local` on a node; product ``"stats"``."""

    reads_data: ClassVar[bool] = True
    estimator: _Est

    def run(self, env: Environment) -> None:
        """Query the local frame and publish its aggregates."""
        env.products["stats"] = self.estimator.local(self.estimator.frame(env.df))


class Aggregate(Operation):
    """Runs an estimator's :meth:`~Estimator.merge` on the initiator; product ``"result"``."""

    estimator: _Est

    def run(self, env: Environment) -> None:
        """Combine every node's ``"stats"``."""
        env.products["result"] = self.estimator.merge(env.resource("stats"))


class CountEstimator(Estimator):
    """Rows (or, with ``feature``, non-missing values of it), as ``pandas.count``."""

    feature: str | None = None

    def local(self, df: Any) -> Stats:
        return int(len(df) if self.feature is None else len(self._col(df, self.feature)))

    def merge(self, stats: list[Stats]) -> int:
        return int(sum(stats))


class SumEstimator(Estimator):
    """Sum of a column's non-missing values (exact for integers)."""

    feature: str

    def local(self, df: Any) -> Stats:
        return _py(self._col(df, self.feature).sum())

    def merge(self, stats: list[Stats]) -> Any:
        return sum(stats)


class MeanEstimator(Estimator):
    """Mean of a column's non-missing values (NaN when there are none)."""

    feature: str

    def local(self, df: Any) -> Stats:
        col = self._col(df, self.feature)
        return [len(col), _py(col.sum())]

    def merge(self, stats: list[Stats]) -> float:
        n = sum(s[0] for s in stats)
        return float(sum(s[1] for s in stats)) / n if n else math.nan


class VarianceEstimator(Estimator):
    """Sample variance (``ddof=1``, as pandas) by Chan's pairwise merge of (n, mean, M2)."""

    feature: str
    ddof: int = 1

    def local(self, df: Any) -> Stats:
        col = self._col(df, self.feature).astype(float)
        n = len(col)
        mean = float(col.mean()) if n else 0.0
        return [n, mean, float(((col - mean) ** 2).sum()) if n else 0.0]

    def merge(self, stats: list[Stats]) -> float:
        n, mean, m2 = 0, 0.0, 0.0
        for nb, mb, m2b in stats:
            if nb == 0:
                continue
            total = n + nb
            delta = mb - mean
            mean += delta * nb / total
            m2 += m2b + delta * delta * n * nb / total
            n = total
        return m2 / (n - self.ddof) if n > self.ddof else math.nan


class HistogramEstimator(Estimator):
    """Counts of a column's values in fixed bins (``numpy.histogram`` with these edges)."""

    feature: str
    edges: list[float]

    def local(self, df: Any) -> Stats:
        import numpy as np

        counts, _ = np.histogram(self._col(df, self.feature).to_numpy(float), bins=self.edges)
        return [int(c) for c in counts]

    def merge(self, stats: list[Stats]) -> dict[str, list[Any]]:
        counts = [sum(c) for c in zip(*stats, strict=True)] if stats else []
        return {"edges": list(self.edges), "counts": counts}


class QuantileEstimator(Estimator):
    """Approximate ``q``-quantile (pandas' linear interpolation) from a fine histogram.

    Each node counts its values in ``bins`` equal bins over ``[low, high]``. The result
    ``{"value": v, "error_bound": e}`` guarantees ``|v - pooled.quantile(q)| <= e``,
    where ``e`` is at most half the span of the bins holding the two order statistics
    the exact quantile interpolates (``(high - low) / (2 * bins)`` when both fall in one
    bin). A value outside ``[low, high]`` is an error (widen the range).
    """

    feature: str
    q: float
    low: float
    high: float
    bins: int = 4096

    def local(self, df: Any) -> Stats:
        import numpy as np

        values = self._col(df, self.feature).to_numpy(float)
        outside = int(((values < self.low) | (values > self.high)).sum())
        if outside:
            raise StepsError(
                f"QuantileEstimator({self.feature!r}): {outside} value(s) lie outside "
                f"[{self.low}, {self.high}]",
                hint="widen low/high to the column's range (see the node metadata)",
            )
        counts, _ = np.histogram(values, bins=self.bins, range=(self.low, self.high))
        return [int(c) for c in counts]

    def merge(self, stats: list[Stats]) -> dict[str, float]:
        import numpy as np

        counts = np.sum(np.asarray(stats, dtype=np.int64), axis=0)
        n = int(counts.sum())
        if n == 0:
            return {"value": math.nan, "error_bound": math.nan}
        cum = np.cumsum(counts)
        rank = self.q * (n - 1)
        b0 = int(np.searchsorted(cum, math.floor(rank), side="right"))
        b1 = int(np.searchsorted(cum, math.ceil(rank), side="right"))
        width = (self.high - self.low) / self.bins
        lo, hi = self.low + b0 * width, self.low + (b1 + 1) * width
        return {"value": (lo + hi) / 2, "error_bound": (hi - lo) / 2}


def _groups(df: Any, by: str, feature: str | None) -> Any:
    require_columns(df, [by] + ([feature] if feature else []), "group estimator")
    return df.groupby(by, dropna=True)


class GroupCountEstimator(Estimator):
    """Rows per value of ``by`` (or non-missing ``feature`` values per group)."""

    by: str
    feature: str | None = None

    def local(self, df: Any) -> Stats:
        grouped = _groups(df, self.by, self.feature)
        counts = grouped.size() if self.feature is None else grouped[self.feature].count()
        return [[_py(k), int(v)] for k, v in counts.items()]

    def merge(self, stats: list[Stats]) -> dict[Any, int]:
        out: dict[Any, int] = {}
        for pairs in stats:
            for key, n in pairs:
                out[key] = out.get(key, 0) + n
        return dict(sorted(out.items()))


class GroupMeanEstimator(Estimator):
    """Mean of ``feature``'s non-missing values per value of ``by``."""

    by: str
    feature: str

    def local(self, df: Any) -> Stats:
        grouped = _groups(df, self.by, self.feature)[self.feature]
        counts, sums = grouped.count(), grouped.sum()
        return [[_py(k), int(counts[k]), _py(sums[k])] for k in counts.index]

    def merge(self, stats: list[Stats]) -> dict[Any, float]:
        n: dict[Any, int] = {}
        total: dict[Any, float] = {}
        for triples in stats:
            for key, c, s in triples:
                n[key] = n.get(key, 0) + c
                total[key] = total.get(key, 0.0) + s
        return {k: (total[k] / n[k] if n[k] else math.nan) for k in sorted(n)}
