"""The model base: the federated protocol, evaluation, and save/load without pickle.

A model object holds only its JSON hyper-parameters; what it learns lives in plain
``params`` (numbers, lists, numpy arrays) so that it travels through shoal's codec:

- a node: ``update = model.train(X, y, params)`` (``params`` the current global model,
  or None in the first round); an update carries ``"n"``, its sample count;
- the aggregator: ``params = model.aggregate(updates, params)``;
- everyone: ``predict`` (class probabilities, or values for a regressor), ``classify``
  (labels) and ``eval`` (metrics) from ``params``; ``save``/``load`` write and read
  codec bytes (model spec and params), never pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shoal import _codec
from shoal._steps.learn import _metrics
from shoal._steps.learn._base import LearnEntity
from shoal._steps.learn._deps import LearnError

Params = dict[str, Any]
Update = dict[str, Any]

_FORMAT = "shoal.learn.model/1"


def as_matrix(X: Any, who: str) -> np.ndarray[Any, Any]:
    """``X`` (a frame or an array) as a 2-D float64 array, or a clear error."""
    try:
        x = np.asarray(X.to_numpy(dtype=np.float64) if hasattr(X, "to_numpy") else X, np.float64)
    except (TypeError, ValueError) as exc:
        raise LearnError(
            f"{who}: the features are not all numbers ({exc})",
            code="learn.params",
            hint="encode categorical columns first (FederatedOneHotEncoder)",
        ) from exc
    if x.ndim != 2:
        raise LearnError(
            f"{who}: features of shape {x.shape}, not (rows, columns)",
            code="learn.params",
            hint="give a data frame or a 2-D array",
        )
    return x


class Model(LearnEntity):
    """Base of the federated models; subclasses implement ``train``, ``aggregate``, ``predict``."""

    is_classifier: ClassVar[bool] = False

    def train(self, X: Any, y: Any, params: Params | None = None) -> Update:
        """A node's update from its data, starting from the global ``params``."""
        raise NotImplementedError

    def aggregate(self, updates: Sequence[Update], params: Params | None = None) -> Params:
        """The new global params from every node's update."""
        raise NotImplementedError

    def predict(self, X: Any, params: Params) -> np.ndarray[Any, Any]:
        """Class probabilities (n, classes) for a classifier; values (n,) for a regressor."""
        raise NotImplementedError

    def classify(self, X: Any, params: Params) -> np.ndarray[Any, Any]:
        """The predicted labels (a classifier's most probable class)."""
        if not self.is_classifier:
            raise LearnError(
                f"{type(self).__name__} is a regressor: it does not classify",
                code="learn.params",
                hint="use predict() for its values",
            )
        proba = self.predict(X, params)
        classes = np.asarray(params["classes"], dtype=object)
        return np.asarray(classes[np.argmax(proba, axis=1)].tolist())

    def eval(self, X: Any, y: Any, params: Params) -> dict[str, Any]:
        """Metrics of ``params`` on ``(X, y)``: multiclass-correct, or a regressor's."""
        if self.is_classifier:
            proba = self.predict(X, params)
            classes = list(params["classes"])
            pred = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]
            return _metrics.classification(np.asarray(y).tolist(), pred.tolist(), classes, proba)
        return _metrics.regression(y, self.predict(X, params))

    def _updates(self, updates: Sequence[Update]) -> Sequence[Update]:
        if not updates:
            raise LearnError(
                f"{type(self).__name__}.aggregate was given no updates",
                code="learn.stats",
                hint="aggregate the train() results of at least one node",
            )
        return updates

    def dumps(self, params: Params) -> bytes:
        """The model and its params as codec bytes (never pickle)."""
        return _codec.encode({"format": _FORMAT, "model": self.spec(), "params": params})

    def save(self, params: Params, path: str | Path) -> Path:
        """Write :meth:`dumps` to ``path``; returns the path."""
        p = Path(path)
        p.write_bytes(self.dumps(params))
        return p

    @staticmethod
    def loads(data: bytes) -> tuple[Model, Params]:
        """The model and params that :meth:`dumps` wrote."""
        doc = _codec.decode(data)
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise LearnError(
                "these bytes are not a model saved by Model.save",
                code="learn.load",
                hint=f"load a file written by Model.save ({_FORMAT})",
            )
        model = LearnEntity.from_spec(doc["model"])
        if not isinstance(model, Model):
            raise LearnError(
                f"{doc['model'].get('kind')} is not a model",
                code="learn.load",
                hint="load a file written by Model.save",
            )
        return model, doc["params"]

    @staticmethod
    def load(path: str | Path) -> tuple[Model, Params]:
        """The model and params that :meth:`save` wrote to ``path``."""
        return Model.loads(Path(path).read_bytes())
