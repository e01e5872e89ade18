"""Transformers fitted from their parameters alone: no round, the same on every node."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import model_validator

from shoal._steps.learn._base import FederatedTransformer, State
from shoal._steps.learn._deps import LearnError

FilterOperation = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null"]


class FederatedFilter(FederatedTransformer):
    """Keep the rows where ``features_in[0] <operation> value`` holds.

    A spec, not a callable, so that it travels as JSON: ``FederatedFilter(features_in="age",
    operation=">=", value=18)``. ``in``/``not_in`` take a list; ``is_null``/``not_null``
    take no value. The dialect's query filters can compile to a chain of these.
    """

    operation: FilterOperation
    value: Any = None
    stateless: ClassVar[bool] = True

    @model_validator(mode="after")
    def _one_feature(self) -> FederatedFilter:
        if len(self.features_in) != 1:
            raise LearnError(
                f"FederatedFilter filters one column, not {self.features_in}",
                code="learn.params",
                hint="chain one FederatedFilter per column in a FederatedPipeline",
            )
        if self.operation in ("in", "not_in") and not isinstance(self.value, list):
            raise LearnError(
                f"FederatedFilter {self.operation!r} needs a list value, not {self.value!r}",
                code="learn.params",
                hint="give value=[...]",
            )
        return self

    def mask(self, df: Any) -> Any:
        """The boolean row mask of the rows kept."""
        self._check(df)
        col = df[self.features_in[0]]
        op, v = self.operation, self.value
        ops = {
            "==": lambda: col == v,
            "!=": lambda: col != v,
            "<": lambda: col < v,
            "<=": lambda: col <= v,
            ">": lambda: col > v,
            ">=": lambda: col >= v,
            "in": lambda: col.isin(v),
            "not_in": lambda: ~col.isin(v),
            "is_null": lambda: col.isna(),
            "not_null": lambda: col.notna(),
        }
        return ops[op]()

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """The rows of ``df`` that pass the filter."""
        return df[self.mask(df)]


class FederatedDrop(FederatedTransformer):
    """Drop the columns ``features_in``."""

    stateless: ClassVar[bool] = True

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` without ``features_in``."""
        self._check(df)
        return df.drop(columns=self.features_in)


class FederatedRename(FederatedTransformer):
    """Rename the columns ``features_in`` to ``features_out``."""

    stateless: ClassVar[bool] = True

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` with the columns renamed."""
        self._check(df)
        return df.rename(columns=dict(zip(self.features_in, self.columns_out, strict=True)))


class FederatedClamp(FederatedTransformer):
    """Clip ``features_in`` to ``[min_value, max_value]`` (either bound may be None)."""

    min_value: float | None = None
    max_value: float | None = None
    stateless: ClassVar[bool] = True

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` with the columns clipped."""
        self._check(df)
        out = df.copy()
        for src, dst in zip(self.features_in, self.columns_out, strict=True):
            out[dst] = df[src].clip(lower=self.min_value, upper=self.max_value)
        return out


class FederatedBinarizer(FederatedTransformer):
    """1 where a value is above ``threshold``, else 0 (scikit-learn's ``Binarizer``)."""

    threshold: float = 0.0
    stateless: ClassVar[bool] = True

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` with the columns binarized."""
        self._check(df)
        out = df.copy()
        for src, dst in zip(self.features_in, self.columns_out, strict=True):
            out[dst] = (df[src] > self.threshold).astype(df[src].dtype)
        return out
