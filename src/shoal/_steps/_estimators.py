"""Estimators: exact federated statistics (count, mean, sum, variance, histogram,
group count and mean) and an approximate quantile with a stated error bound.

Each node computes :meth:`Estimator.local` on its (queried) frame: aggregates only,
never rows. The initiator combines them with :meth:`Estimator.merge`. Group keys are
merged by value, so a key first seen at a later node is counted like any other.

Two options change how the statistics travel (docs/steps.md):

- ``secure=True`` (the seed's "noise with a Sequential task order"): the statistics are
  summed by a secure sum over a chain (:mod:`shoal._steps._secure`); no party sees
  another node's value, only the initiator reads the sum.
- ``privacy=DP(...)``: each node clips its values to the declared bounds, spends the
  mechanism's charge from its budget and adds calibrated noise to its statistics before
  they leave it (local DP); with ``secure=True`` the noised statistics are summed
  securely.

Both use the same per-node statistics vector (:meth:`Estimator.vector`) summed over
nodes and read by :meth:`Estimator.combine`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import field_validator, model_validator

from shoal._steps._dp import DP, as_dp
from shoal._steps._entity import DUMP, LOAD, Entity, StepsError
from shoal._steps._operation import Environment, Operation
from shoal._steps._query import Query, QueryFilter, as_query, require_columns

Stats = Any

FRAC_BITS = 24
"""Fractional bits of the secure sum's fixed point (shoal.privacy's default)."""


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
        None (exact) or a :class:`DP` spec: local differential privacy (each node
        spends from its budget and noises its statistics before releasing them).
    secure
        Sum the statistics by a secure sum over a chain (Initialize, Sequential,
        Finalize): every value a node or the coordinator sees is uniform in the ring.
    frac_bits
        Fractional bits of the secure sum's fixed-point encoding of real-valued
        statistics (integers are encoded exactly); a real value must stay under
        ``2**(63 - frac_bits) / nodes`` in magnitude.
    """

    query: Annotated[Query | None, LOAD, DUMP] = None
    privacy: Annotated[DP | None, LOAD, DUMP] = None
    secure: bool = False
    frac_bits: int = FRAC_BITS

    @field_validator("query", mode="before")
    @classmethod
    def _as_query(cls, value: Any) -> Any:
        return as_query(value) if isinstance(value, QueryFilter) else value

    @field_validator("privacy", mode="before")
    @classmethod
    def _as_dp(cls, value: Any) -> Any:
        return as_dp(value)

    @model_validator(mode="after")
    def _check_private(self) -> Estimator:
        if not 0 <= self.frac_bits <= 40:
            raise StepsError(
                f"{type(self).__name__}(frac_bits={self.frac_bits}) is outside 0..40",
                code="steps.privacy",
                hint="the default 24 keeps about 7 decimals and sums up to 5.5e11",
            )
        if self.privacy is not None:
            self.sensitivity()  # names a missing bound now, not on the nodes
        return self

    # -- statistics as a vector: what the secure sum and DP add up -----------------

    def facts(self, df: Any) -> dict[str, Any]:
        """What a node reveals before a secure sum so that every node lays out its
        vector alike (group keys; whether a summed column is integral)."""
        return {}

    def plan(self, facts: list[dict[str, Any]]) -> dict[str, Any]:
        """The vector layout every node uses, from every node's :meth:`facts`."""
        return {}

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        """This node's statistics (already queried ``df``) as a flat list; they are
        summed over the nodes. Under DP the values are clipped to the bounds."""
        raise NotImplementedError(f"{type(self).__name__} has no secure or DP form")

    def integer_slots(self, plan: dict[str, Any]) -> int:
        """How many leading entries of :meth:`vector` are integers (summed exactly)."""
        return 0

    def combine(self, plan: dict[str, Any], total: list[Any]) -> Any:
        """The result from the sum of every node's :meth:`vector`."""
        raise NotImplementedError(f"{type(self).__name__} has no secure or DP form")

    def sensitivity(self) -> tuple[float, float]:
        """``(L1, L2)``: the most adding or removing one record changes the vector."""
        return 1.0, 1.0

    def release(self, df: Any, plan: dict[str, Any], spend: Any) -> list[Any]:
        """The vector this node releases: exact, or under DP noised after spending.

        Parameters
        ----------
        df
            The queried frame.
        plan
            From :meth:`plan`.
        spend
            ``spend(charge)`` from the :class:`Environment` (raises when the node's
            budget refuses the charge).
        """
        values = self.vector(df, plan)
        if self.privacy is None:
            return values
        if spend is None:
            raise StepsError(
                f"{type(self).__name__}: a DP release needs the node's budget (run it as a task)",
                code="steps.privacy",
            )
        mechanism = self.privacy.mechanism_for(*self.sensitivity())
        spend(mechanism.charge(label=f"steps {type(self).__name__}"))
        noisy = mechanism.randomise(np.asarray(values, dtype=np.float64).reshape(-1))
        return [float(v) for v in noisy]

    def _values(self, df: Any, feature: str) -> Any:
        """The non-missing values of ``feature`` (floats clipped to the bounds under DP)."""
        col = self._col(df, feature)
        return col if self.privacy is None else self.privacy.clip(col.astype(float))

    def _bound(self) -> float:
        assert self.privacy is not None
        return self.privacy.bound(type(self).__name__)

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
        """The artifact: every node's aggregates, combined on the initiator.

        Two steps (Parallel, Finalize); with ``secure=True`` the secure sum's four
        (Initialize when ``initiator`` is named, Parallel, Sequential, Finalize).
        Its Finalize writes the global ``"result"``.
        """
        from shoal._steps._artifact import Artifact, Collect, Finalize, Parallel

        if self.secure:
            from shoal._steps._secure import secure_artifact

            return secure_artifact(self, dataset, initiator, name or type(self).__name__.lower())

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
        """Query the local frame and publish its aggregates (noised under DP)."""
        est = self.estimator
        df = est.frame(env.df)
        if est.privacy is None:
            env.products["stats"] = est.local(df)
        else:
            env.products["stats"] = est.release(df, est.plan([]), env.spend)


class Aggregate(Operation):
    """Runs an estimator's :meth:`~Estimator.merge` on the initiator; product ``"result"``."""

    estimator: _Est

    def run(self, env: Environment) -> None:
        """Combine every node's ``"stats"``."""
        est = self.estimator
        stats = env.resource("stats")
        if est.privacy is None:
            env.products["result"] = est.merge(stats)
        else:
            total = np.sum(np.asarray(stats, dtype=np.float64), axis=0)
            env.products["result"] = est.combine(est.plan([]), [float(v) for v in total])


class CountEstimator(Estimator):
    """Rows (or, with ``feature``, non-missing values of it), as ``pandas.count``."""

    feature: str | None = None

    def local(self, df: Any) -> Stats:
        return int(len(df) if self.feature is None else len(self._col(df, self.feature)))

    def merge(self, stats: list[Stats]) -> int:
        return int(sum(stats))

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        return [self.local(df)]

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return 1

    def combine(self, plan: dict[str, Any], total: list[Any]) -> Any:
        return total[0]


class SumEstimator(Estimator):
    """Sum of a column's non-missing values (exact for integers)."""

    feature: str

    def local(self, df: Any) -> Stats:
        return _py(self._col(df, self.feature).sum())

    def merge(self, stats: list[Stats]) -> Any:
        return sum(stats)

    def facts(self, df: Any) -> dict[str, Any]:
        import pandas as pd

        col = self._col(df, self.feature)
        return {"integral": bool(pd.api.types.is_integer_dtype(col) or col.dtype == bool)}

    def plan(self, facts: list[dict[str, Any]]) -> dict[str, Any]:
        integral = self.privacy is None and all(f.get("integral", False) for f in facts)
        return {"integral": integral and bool(facts)}

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        total = _py(self._values(df, self.feature).sum())
        return [int(total) if plan.get("integral") else float(total)]

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return 1 if plan.get("integral") else 0

    def combine(self, plan: dict[str, Any], total: list[Any]) -> Any:
        return total[0]

    def sensitivity(self) -> tuple[float, float]:
        b = self._bound()
        return b, b


class MeanEstimator(Estimator):
    """Mean of a column's non-missing values (NaN when there are none)."""

    feature: str

    def local(self, df: Any) -> Stats:
        col = self._col(df, self.feature)
        return [len(col), _py(col.sum())]

    def merge(self, stats: list[Stats]) -> float:
        n = sum(s[0] for s in stats)
        return float(sum(s[1] for s in stats)) / n if n else math.nan

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        col = self._values(df, self.feature)
        return [len(col), float(col.sum())]

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return 1

    def combine(self, plan: dict[str, Any], total: list[Any]) -> float:
        n, s = total
        return float(s) / n if n > 0 else math.nan

    def sensitivity(self) -> tuple[float, float]:
        b = self._bound()
        return 1.0 + b, math.sqrt(1.0 + b * b)


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

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        col = self._values(df, self.feature).astype(float)
        return [len(col), float(col.sum()), float((col * col).sum())]

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return 1

    def combine(self, plan: dict[str, Any], total: list[Any]) -> float:
        # Sums of x and x**2: exact enough for the fixed point's 24 bits when the mean
        # is not huge against the spread (docs/steps.md).
        n, s, s2 = total
        if not n > self.ddof:
            return math.nan
        spread: float = max(float(s2) - float(s) * float(s) / n, 0.0)
        return spread / float(n - self.ddof)

    def sensitivity(self) -> tuple[float, float]:
        b = self._bound()
        return 1.0 + b + b * b, math.sqrt(1.0 + b**2 + b**4)


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

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        return list(self.local(df))

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return len(self.edges) - 1

    def combine(self, plan: dict[str, Any], total: list[Any]) -> dict[str, list[Any]]:
        return {"edges": list(self.edges), "counts": list(total)}


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

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        if self.privacy is not None:  # a refusal would depend on the data: clip instead
            col = self._col(df, self.feature).astype(float).clip(self.low, self.high)
            counts, _ = np.histogram(
                col.to_numpy(float), bins=self.bins, range=(self.low, self.high)
            )
            return [int(c) for c in counts]
        return list(self.local(df))

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return self.bins

    def combine(self, plan: dict[str, Any], total: list[Any]) -> dict[str, float]:
        # Noisy counts (DP) are rounded and kept >= 0 before the ranks are read.
        counts = np.clip(np.rint(np.asarray(total, dtype=np.float64)), 0, None)
        return self.merge([counts.astype(np.int64)])

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


class _Grouped(Estimator):
    """Shared by the group estimators: the key layout of the secure sum and DP."""

    by: str
    groups: list[Any] | None = None

    @model_validator(mode="after")
    def _declared_under_dp(self) -> _Grouped:
        if self.privacy is not None and self.groups is None:
            raise StepsError(
                f"{type(self).__name__}(privacy=...): which groups exist is itself data; "
                "under DP the keys must be declared",
                code="steps.privacy",
                hint=f"pass groups=[...] (every value of {self.by!r} to report)",
            )
        return self

    def _keys_of(self, df: Any) -> list[Any]:
        require_columns(df, [self.by], type(self).__name__)
        return [_py(k) for k in df[self.by].dropna().unique()]

    def facts(self, df: Any) -> dict[str, Any]:
        return {} if self.groups is not None else {"keys": self._keys_of(df)}

    def plan(self, facts: list[dict[str, Any]]) -> dict[str, Any]:
        if self.groups is not None:
            return {"keys": list(self.groups)}
        keys: set[Any] = set()
        for f in facts:
            keys.update(f.get("keys", []))
        return {"keys": sorted(keys)}

    def _declared(self, out: dict[Any, Any], missing: Any) -> dict[Any, Any]:
        if self.groups is None:
            return out
        return {k: out.get(k, missing) for k in self.groups}


class GroupCountEstimator(_Grouped):
    """Rows per value of ``by`` (or non-missing ``feature`` values per group).

    ``groups``: the keys to report (declared: required under DP; a secure sum then
    reveals no node's keys); None: every key some node holds.
    """

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
        return self._declared(dict(sorted(out.items())), 0)

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        counts = dict(self.local(df)) if len(df) else {}
        return [int(counts.get(k, 0)) for k in plan["keys"]]

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return len(plan["keys"])

    def combine(self, plan: dict[str, Any], total: list[Any]) -> dict[Any, Any]:
        return dict(zip(plan["keys"], total, strict=True))


class GroupMeanEstimator(_Grouped):
    """Mean of ``feature``'s non-missing values per value of ``by``.

    ``groups`` as for :class:`GroupCountEstimator`.
    """

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
        out = {k: (total[k] / n[k] if n[k] else math.nan) for k in sorted(n)}
        return self._declared(out, math.nan)

    def vector(self, df: Any, plan: dict[str, Any]) -> list[Any]:
        grouped = _groups(df, self.by, self.feature)[self.feature]
        if self.privacy is not None:
            grouped = self.privacy.clip(df[self.feature].astype(float)).groupby(
                df[self.by], dropna=True
            )
        counts, sums = grouped.count(), grouped.sum()
        keys = plan["keys"]
        return [int(counts.get(k, 0)) for k in keys] + [float(sums.get(k, 0.0)) for k in keys]

    def integer_slots(self, plan: dict[str, Any]) -> int:
        return len(plan["keys"])

    def combine(self, plan: dict[str, Any], total: list[Any]) -> dict[Any, float]:
        keys = plan["keys"]
        n, s = total[: len(keys)], total[len(keys) :]
        return {k: (float(s[i]) / n[i] if n[i] > 0 else math.nan) for i, k in enumerate(keys)}

    def sensitivity(self) -> tuple[float, float]:
        b = self._bound()
        return 1.0 + b, math.sqrt(1.0 + b * b)
