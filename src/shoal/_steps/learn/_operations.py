"""Model operations: what a node (or the aggregator) does with a model, as pure calls.

The dialect wraps each as an ``Operation``: ``Train`` and ``TrainTest`` run on every
node (``local``), ``Aggregation`` on the aggregator (``merge``), ``LocalCrossValidation``
on every node (k fold metrics of local training, for model selection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_serializer, field_validator

from shoal._steps.learn._base import LearnEntity
from shoal._steps.learn._deps import LearnError, require_columns
from shoal._steps.learn._model import Model, Params, Update
from shoal._steps.learn._pipeline import FederatedSplitter


class _WithModel(LearnEntity):
    """An entity holding a model, written in JSON as the model's ``spec()``."""

    model: Model

    @field_validator("model", mode="before")
    @classmethod
    def _from_spec(cls, value: Any) -> Any:
        return LearnEntity.from_spec(value) if isinstance(value, dict) else value

    @field_serializer("model")
    def _to_spec(self, model: Model) -> dict[str, Any]:
        return model.spec()


class ModelOperation(_WithModel):
    """A model and the columns it learns from.

    Parameters
    ----------
    model
        The model (its ``spec()`` in JSON).
    label
        The target column.
    features
        The feature columns; None: every column but the label.
    """

    label: str
    features: list[str] | None = None

    def xy(self, df: Any) -> tuple[Any, Any]:
        """``(X, y)`` of a frame: the feature columns and the label column."""
        who = type(self).__name__
        require_columns(df, [self.label], who)
        cols = (
            self.features
            if self.features is not None
            else [c for c in df.columns if c != self.label]
        )
        require_columns(df, cols, who)
        return df[cols], df[self.label].to_numpy()


class Train(ModelOperation):
    """A node trains on all its rows."""

    def local(self, df: Any, params: Params | None = None) -> Update:
        """The node's update from the global ``params``."""
        x, y = self.xy(df)
        return self.model.train(x, y, params)


class TrainTest(ModelOperation):
    """A node trains on its train split and evaluates on its test split."""

    splitter: FederatedSplitter = Field(default_factory=FederatedSplitter)

    def local(self, df: Any, params: Params | None = None, salt: str = "") -> Update:
        """The node's update from its train split."""
        train, _ = self.splitter.split(df, salt)
        x, y = self.xy(train)
        return self.model.train(x, y, params)

    def evaluate(self, df: Any, params: Params, salt: str = "") -> dict[str, Any]:
        """Metrics of ``params`` (e.g. the aggregated model) on the node's test split."""
        _, test = self.splitter.split(df, salt)
        x, y = self.xy(test)
        return self.model.eval(x, y, params)

    def run(self, df: Any, params: Params | None = None, salt: str = "") -> dict[str, Any]:
        """``{"update": ..., "metrics": the node's own model on its test split}``."""
        update = self.local(df, params, salt)
        mine = self.model.aggregate([update], params)
        return {"update": update, "metrics": self.evaluate(df, mine, salt)}


class LocalCrossValidation(ModelOperation):
    """k-fold cross-validation of local training on a node's rows.

    Rows are shuffled with ``random_state``; with ``stratified`` each class is dealt
    over the folds in turn, so every fold keeps the class proportions. Each fold trains
    from ``params`` on the other folds and is evaluated on itself.
    """

    folds: int = 5
    stratified: bool = True
    random_state: int = 0

    def fold_of_rows(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The fold (0..k-1) of each row."""
        if self.folds < 2 or len(y) < self.folds:
            raise LearnError(
                f"LocalCrossValidation: {self.folds} folds over {len(y)} rows",
                code="learn.params",
                hint="give folds >= 2 and at most the node's number of rows",
            )
        rng = np.random.default_rng(self.random_state)
        fold = np.empty(len(y), dtype=np.int64)
        if self.stratified and self.model.is_classifier:
            offset = 0
            for c in sorted(set(y.tolist()), key=repr):
                rows = rng.permutation(np.flatnonzero(y == c))
                fold[rows] = (np.arange(len(rows)) + offset) % self.folds
                offset += len(rows)
        else:
            fold[rng.permutation(len(y))] = np.arange(len(y)) % self.folds
        return fold

    def local(self, df: Any, params: Params | None = None) -> dict[str, Any]:
        """``{"folds": [k metrics], "mean": {metric: mean over folds}}``."""
        x, y = self.xy(df)
        fold = self.fold_of_rows(np.asarray(y))
        results = []
        for k in range(self.folds):
            test = fold == k
            update = self.model.train(x[~test], y[~test], params)
            fitted = self.model.aggregate([update], params)
            results.append(self.model.eval(x[test], y[test], fitted))
        keys = [k for k, v in results[0].items() if isinstance(v, float)]
        return {
            "folds": results,
            "mean": {k: float(np.mean([r[k] for r in results])) for k in keys},
        }


class Aggregation(_WithModel):
    """The aggregator's step: every node's update into the new global params."""

    def merge(self, updates: Sequence[Update], params: Params | None = None) -> Params:
        """``model.aggregate(updates, params)``."""
        return self.model.aggregate(updates, params)
