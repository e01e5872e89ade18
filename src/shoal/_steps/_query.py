"""Queries: filters built from ``QueryFeature`` comparisons, and stages.

``QueryFeature("age") < 30`` is a filter; filters combine with ``&`` (AND), ``|`` (OR)
and ``~`` (NOT), or with :class:`And`, :class:`Or`, :class:`Not`; ``isin`` and
``isnull`` / ``notnull`` build IN and is-null. A :class:`Query` applies its stages in
order (a filter keeps rows, a :class:`Select` keeps columns, a :class:`Transform` applies
a federated transformer). A stage naming a missing column fails naming the columns that
exist. Transformers are fitted federatedly: an artifact whose model operation's query
has one compiles the fitting to steps before it (:mod:`shoal._steps._learn_ops`), and
the query is applied with the fitted state.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator

from shoal._steps._entity import DUMP, LOAD, Entity, StepsError
from shoal._steps.learn._base import FederatedTransformer, LearnEntity, State
from shoal._steps.learn._pipeline import FederatedPipeline

Op = Literal["<", "<=", ">", ">=", "==", "!="]
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def require_columns(df: Any, columns: Iterable[str], who: str) -> None:
    """Raise ``steps.column`` naming the present columns if any of ``columns`` is missing."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StepsError(
            f"{who} names missing column(s) {missing}; the data has {list(df.columns)}",
            code="steps.column",
            hint="use one of the columns the node metadata lists",
        )


class QueryFilter(Entity):
    """A row filter: :meth:`mask` is a boolean Series over a frame."""

    def columns(self) -> list[str]:
        """The columns the filter reads."""
        raise NotImplementedError

    def _mask(self, df: Any) -> Any:
        raise NotImplementedError

    def mask(self, df: Any) -> Any:
        """The rows of ``df`` the filter keeps (checks the columns first)."""
        require_columns(df, self.columns(), f"filter {self!r}")
        return self._mask(df)

    def __and__(self, other: QueryFilter) -> And:
        return And(items=[self, other])

    def __or__(self, other: QueryFilter) -> Or:
        return Or(items=[self, other])

    def __invert__(self) -> Not:
        return Not(item=self)


_Filter = Annotated[QueryFilter, LOAD, DUMP]


class Compare(QueryFilter):
    """``feature OP value``; missing values never match (as in pandas)."""

    feature: str
    op: Op
    value: float | int | str | bool

    def columns(self) -> list[str]:
        return [self.feature]

    def _mask(self, df: Any) -> Any:
        return _OPS[self.op](df[self.feature], self.value)


class IsIn(QueryFilter):
    """``feature IN values``."""

    feature: str
    values: list[float | int | str | bool]

    def columns(self) -> list[str]:
        return [self.feature]

    def _mask(self, df: Any) -> Any:
        return df[self.feature].isin(self.values)


class IsNull(QueryFilter):
    """``feature IS NULL`` (NaN or None)."""

    feature: str

    def columns(self) -> list[str]:
        return [self.feature]

    def _mask(self, df: Any) -> Any:
        return df[self.feature].isna()


class And(QueryFilter):
    """Every item holds."""

    items: list[_Filter]

    def columns(self) -> list[str]:
        return [c for f in self.items for c in f.columns()]

    def _mask(self, df: Any) -> Any:
        out = self.items[0].mask(df)
        for f in self.items[1:]:
            out = out & f.mask(df)
        return out


class Or(QueryFilter):
    """At least one item holds."""

    items: list[_Filter]

    def columns(self) -> list[str]:
        return [c for f in self.items for c in f.columns()]

    def _mask(self, df: Any) -> Any:
        out = self.items[0].mask(df)
        for f in self.items[1:]:
            out = out | f.mask(df)
        return out


class Not(QueryFilter):
    """The item does not hold."""

    item: _Filter

    def columns(self) -> list[str]:
        return self.item.columns()

    def _mask(self, df: Any) -> Any:
        return ~self.item.mask(df)


class QueryFeature(Entity):
    """A column of the local data; comparisons build filters.

    Parameters
    ----------
    name
        The column name (see the nodes' metadata for what exists).
    """

    name: str

    def __init__(self, name: str) -> None:
        super().__init__(name=name)  # type: ignore[call-arg]

    def _cmp(self, op: Op, value: Any) -> Compare:
        return Compare(feature=self.name, op=op, value=value)

    def __lt__(self, value: Any) -> Compare:
        return self._cmp("<", value)

    def __le__(self, value: Any) -> Compare:
        return self._cmp("<=", value)

    def __gt__(self, value: Any) -> Compare:
        return self._cmp(">", value)

    def __ge__(self, value: Any) -> Compare:
        return self._cmp(">=", value)

    def __eq__(self, value: Any) -> Compare:  # type: ignore[override]
        return self._cmp("==", value)

    def __ne__(self, value: Any) -> Compare:  # type: ignore[override]
        return self._cmp("!=", value)

    def __hash__(self) -> int:
        return hash(("QueryFeature", self.name))

    def isin(self, values: Iterable[Any]) -> IsIn:
        """``feature IN values``."""
        return IsIn(feature=self.name, values=list(values))

    def isnull(self) -> IsNull:
        """``feature IS NULL``."""
        return IsNull(feature=self.name)

    def notnull(self) -> Not:
        """``NOT feature IS NULL``."""
        return Not(item=self.isnull())


class Select(Entity):
    """A stage keeping only ``columns``."""

    columns: list[str]


def _learn_load(value: Any) -> Any:
    return LearnEntity.from_spec(value) if isinstance(value, dict) else value


LEARN_LOAD = BeforeValidator(_learn_load)
"""Reads a transformer or model of :mod:`shoal._steps.learn` from its ``spec()``."""
LEARN_DUMP = PlainSerializer(lambda value: value.spec())
"""Writes a transformer or model as its ``spec()``."""


class Transform(Entity):
    """A query stage applying a federated transformer (fitted on every node's data).

    ``Query().add(FederatedStandardScaler(features_in=[...]))`` wraps the transformer in
    one. The statistics come from every node that runs the step (after the stages
    before it), so every node applies the same transform.
    """

    transformer: Annotated[FederatedTransformer, LEARN_LOAD, LEARN_DUMP]


class _QueryStage(FederatedTransformer):
    """A filter or Select of a query as a stateless stage of its fitting pipeline."""

    stage: Any = None
    stateless: ClassVar[bool] = True

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        return _apply_stage(self.stage, df)


def _apply_stage(stage: Any, df: Any) -> Any:
    if isinstance(stage, QueryFilter):
        return df[stage.mask(df).fillna(False).astype(bool)]
    if isinstance(stage, Select):
        require_columns(df, stage.columns, f"query stage {stage!r}")
        return df[stage.columns]
    raise StepsError(
        f"query stage {stage!r} is neither a filter, a Select nor a Transform",
        hint="build stages with QueryFeature comparisons, Query.select or Query.add",
    )


class Query(Entity):
    """Stages applied in order to a node's frame: filters keep rows, selects columns.

    Parameters
    ----------
    stages
        :class:`QueryFilter` and :class:`Select` objects.
    """

    stages: list[Annotated[Entity, LOAD, DUMP]] = Field(default_factory=list)

    @field_validator("stages", mode="before")
    @classmethod
    def _wrap_transformers(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                Transform(transformer=v) if isinstance(v, FederatedTransformer) else v
                for v in value
            ]
        return value

    def add(self, stage: Entity | FederatedTransformer) -> Query:
        """This query with one more stage: a filter, a Select or a federated transformer."""
        return Query(stages=[*self.stages, stage])  # type: ignore[list-item]

    def transformers(self) -> list[FederatedTransformer]:
        """The federated transformers among the stages, in order."""
        return [s.transformer for s in self.stages if isinstance(s, Transform)]

    def pipeline(self) -> FederatedPipeline:
        """Every stage as one pipeline: fitting it fits the transformers in order.

        Filters and selects are stateless stages, so each transformer is fitted on the
        rows and columns the stages before it leave.
        """
        return FederatedPipeline(
            stages=[
                s.transformer if isinstance(s, Transform) else _QueryStage(stage=s)
                for s in self.stages
            ]
        )

    def filter(self, item: QueryFilter) -> Query:
        """This query with one more filter stage."""
        return Query(stages=[*self.stages, item])

    def select(self, columns: Iterable[str]) -> Query:
        """This query with one more column selection."""
        return Query(stages=[*self.stages, Select(columns=list(columns))])

    def apply(self, df: Any, fitted: State | None = None, keep_rows: bool = False) -> Any:
        """The frame after every stage.

        Parameters
        ----------
        df
            A node's frame.
        fitted
            The fitted state of :meth:`pipeline` (needed when a stage is a transformer).
        keep_rows
            Skip the row filters (a model predicting on given rows keeps every row).
        """
        if not self.transformers():
            for stage in self.stages:
                if not (keep_rows and isinstance(stage, QueryFilter)):
                    df = _apply_stage(stage, df)
            return df
        pipeline = self.pipeline()
        if not pipeline.done(fitted):
            raise StepsError(
                f"the query's transformers {[type(t).__name__ for t in self.transformers()]} "
                "are not fitted",
                code="steps.unfitted",
                hint="use the query in a model operation (Train, TrainTest, "
                "LocalCrossValidation): the artifact fits its transformers on every node",
            )
        states = list((fitted or {}).get("stages", []))
        states += [{}] * (len(self.stages) - len(states))  # stateless stages at the end
        for stage, state in zip(self.stages, states, strict=True):
            if isinstance(stage, Transform):
                df = stage.transformer.transform(df, state)
            elif not (keep_rows and isinstance(stage, QueryFilter)):
                df = _apply_stage(stage, df)
        return df


def as_query(value: Query | QueryFilter | None) -> Query | None:
    """A query from a filter, a query or None."""
    if isinstance(value, QueryFilter):
        return Query(stages=[value])
    return value
