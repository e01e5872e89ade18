"""Linear models: logistic regression trained by FedAvg rounds, exact linear regression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from shoal._steps.learn._deps import LearnError
from shoal._steps.learn._model import Model, Params, Update, as_matrix


def _softmax(z: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class FederatedLogisticRegression(Model):
    """Multinomial logistic regression trained by FedAvg (one ``train`` call per round).

    Each round a node starts from the global ``params`` (zeros in the first round), runs
    ``local_epochs`` passes of mini-batch gradient descent on its data (``batch_size``
    None: full batch) on the mean cross-entropy plus ``l2 / 2 * |coef|²``, and sends its
    coefficients with its sample count; ``aggregate`` averages them weighted by the
    counts. ``classes`` are every node's labels (all nodes must use the same list: a
    FederatedLabelBinarizer fit gives it). Scale the features first.
    """

    classes: list[int | float | str]
    learning_rate: float = 0.5
    local_epochs: int = 5
    batch_size: int | None = None
    l2: float = 1e-4
    random_state: int = 0

    is_classifier: ClassVar[bool] = True

    def _start(self, n_features: int, params: Params | None) -> tuple[Any, Any]:
        if params is None:
            return np.zeros((len(self.classes), n_features)), np.zeros(len(self.classes))
        coef = np.array(params["coef"], dtype=np.float64)
        if coef.shape != (len(self.classes), n_features):
            raise LearnError(
                f"{type(self).__name__}: global coef of shape {coef.shape}, but "
                f"{len(self.classes)} classes and {n_features} features here",
                code="learn.params",
                hint="every node must train on the same columns and classes",
            )
        return coef, np.array(params["intercept"], dtype=np.float64)

    def train(self, X: Any, y: Any, params: Params | None = None) -> Update:
        """The node's coefficients after its local epochs from the global ``params``."""
        x = as_matrix(X, type(self).__name__)
        labels = np.asarray(y).tolist()
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({v for v in labels if v not in index}, key=repr)
        if unknown:
            raise LearnError(
                f"{type(self).__name__}: labels {unknown} are not in classes {self.classes}",
                code="learn.params",
                hint="give every node's labels in classes (a FederatedLabelBinarizer fit)",
            )
        onehot = np.zeros((len(x), len(self.classes)))
        onehot[np.arange(len(x)), [index[v] for v in labels]] = 1.0
        coef, intercept = self._start(x.shape[1], params)
        rng = np.random.default_rng(self.random_state)
        size = self.batch_size or max(len(x), 1)
        for _ in range(self.local_epochs):
            order = rng.permutation(len(x)) if self.batch_size else np.arange(len(x))
            for start in range(0, len(x), size):
                b = order[start : start + size]
                err = _softmax(x[b] @ coef.T + intercept) - onehot[b]
                coef -= self.learning_rate * (err.T @ x[b] / len(b) + self.l2 * coef)
                intercept -= self.learning_rate * err.mean(axis=0)
        return {"coef": coef, "intercept": intercept, "n": len(x)}

    def aggregate(self, updates: Sequence[Update], params: Params | None = None) -> Params:
        """FedAvg: the updates' coefficients averaged, weighted by their sample counts."""
        updates = self._updates(updates)
        weights = np.asarray([u["n"] for u in updates], dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones(len(updates))
        coef = np.average([np.asarray(u["coef"]) for u in updates], axis=0, weights=weights)
        icpt = np.average([np.asarray(u["intercept"]) for u in updates], axis=0, weights=weights)
        return {"classes": list(self.classes), "coef": coef, "intercept": icpt}

    def predict(self, X: Any, params: Params) -> np.ndarray[Any, Any]:
        """Class probabilities, (n, classes)."""
        x = as_matrix(X, type(self).__name__)
        return _softmax(x @ np.asarray(params["coef"]).T + np.asarray(params["intercept"]))


class FederatedLinearRegression(Model):
    """Least squares (ridge with ``alpha`` > 0), exact from sufficient statistics.

    A node sends ``XᵀX``, ``Xᵀy`` (with a column of ones for the intercept) and its count;
    the aggregator sums them and solves the normal equations: the coefficients are
    scikit-learn's ``LinearRegression`` (``Ridge``, intercept not penalised) on the pooled
    data, in one round. The statistics are aggregates, but ``XᵀX`` of a node with fewer
    rows than columns can reveal them: combine with secure aggregation for such nodes.
    """

    fit_intercept: bool = True
    alpha: float = 0.0

    def _design(self, X: Any) -> np.ndarray[Any, Any]:
        x = as_matrix(X, type(self).__name__)
        if self.fit_intercept:
            x = np.hstack([x, np.ones((len(x), 1))])
        return x

    def train(self, X: Any, y: Any, params: Params | None = None) -> Update:
        """The node's ``XᵀX``, ``Xᵀy`` and row count."""
        x = self._design(X)
        t = np.asarray(y, dtype=np.float64)
        return {"xtx": x.T @ x, "xty": x.T @ t, "n": len(x)}

    def aggregate(self, updates: Sequence[Update], params: Params | None = None) -> Params:
        """The least-squares coefficients of the summed statistics."""
        updates = self._updates(updates)
        xtx = np.sum([np.asarray(u["xtx"]) for u in updates], axis=0)
        xty = np.sum([np.asarray(u["xty"]) for u in updates], axis=0)
        penalty = np.full(len(xtx), self.alpha)
        if self.fit_intercept:
            penalty[-1] = 0.0
        beta = np.linalg.lstsq(xtx + np.diag(penalty), xty, rcond=None)[0]
        if self.fit_intercept:
            return {"coef": beta[:-1], "intercept": float(beta[-1])}
        return {"coef": beta, "intercept": 0.0}

    def predict(self, X: Any, params: Params) -> np.ndarray[Any, Any]:
        """The predicted values, (n,)."""
        x = as_matrix(X, type(self).__name__)
        return np.asarray(x @ np.asarray(params["coef"]) + params["intercept"])
