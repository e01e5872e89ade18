"""A random forest trained on each node and aggregated by merging or voting.

A node fits scikit-learn's ``RandomForestClassifier`` on its data and sends its trees as
plain arrays (children, split feature, threshold, leaf class distribution): no pickle,
no scikit-learn object. The aggregator maps every tree onto the union of the nodes'
classes. ``MERGE`` makes one forest of every node's trees (probabilities averaged over
all trees); ``MAJORITY_VOTE`` keeps one forest per node, each votes its most probable
class, and the class with most votes wins (probabilities are the vote shares). Prediction
walks the arrays in numpy, comparing float32 features with the thresholds like
scikit-learn, so a forest predicts what the scikit-learn forest it came from predicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, ClassVar, Literal

import numpy as np

from shoal._steps.learn._deps import LearnError, sklearn_ensemble
from shoal._steps.learn._model import Model, Params, Update, as_matrix


class StrategyRandomForestClassifier(str, Enum):
    """How node forests are aggregated."""

    MERGE = "MERGE"
    MAJORITY_VOTE = "MAJORITY_VOTE"


def _tree_arrays(tree: Any) -> dict[str, Any]:
    t = tree.tree_
    value = np.asarray(t.value[:, 0, :], dtype=np.float64)
    total = value.sum(axis=1, keepdims=True)
    return {
        "left": np.asarray(t.children_left, dtype=np.int32),
        "right": np.asarray(t.children_right, dtype=np.int32),
        "feature": np.asarray(t.feature, dtype=np.int32),
        "threshold": np.asarray(t.threshold, dtype=np.float64),
        "value": value / np.where(total == 0, 1.0, total),
    }


def _tree_proba(tree: dict[str, Any], x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    left, right = np.asarray(tree["left"]), np.asarray(tree["right"])
    feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
    node = np.zeros(len(x), dtype=np.int64)
    rows = np.arange(len(x))
    active = left[node] != -1
    while active.any():
        r, nd = rows[active], node[active]
        go_left = x[r, feature[nd]] <= threshold[nd]
        node[active] = np.where(go_left, left[nd], right[nd])
        active = left[node] != -1
    return np.asarray(tree["value"])[node]


class FederatedRandomForestClassifier(Model):
    """Random forests fitted on each node, merged or voted (see the module docstring).

    Parameters are scikit-learn's ``RandomForestClassifier`` ones; ``strategy`` picks the
    aggregation. ``train`` ignores ``params`` (a forest is fitted in one round).
    """

    n_estimators: int = 100
    criterion: Literal["gini", "entropy", "log_loss"] = "gini"
    max_depth: int | None = None
    min_samples_split: int = 2
    min_samples_leaf: int = 1
    max_features: Literal["sqrt", "log2"] | int | float | None = "sqrt"
    bootstrap: bool = True
    class_weight: Literal["balanced", "balanced_subsample"] | None = None
    random_state: int | None = 0
    strategy: StrategyRandomForestClassifier = StrategyRandomForestClassifier.MERGE

    is_classifier: ClassVar[bool] = True

    def train(self, X: Any, y: Any, params: Params | None = None) -> Update:
        """Fit a forest on the node's data; its trees as arrays, with its classes."""
        x = as_matrix(X, type(self).__name__)
        labels = np.asarray(y)
        if len(x) == 0:
            raise LearnError(
                f"{type(self).__name__}.train was given no rows",
                code="learn.params",
                hint="train on a node with data (check the filters and the split)",
            )
        forest = sklearn_ensemble().RandomForestClassifier(**self.model_dump(exclude={"strategy"}))
        forest.fit(x, labels)
        return {
            "classes": [c.item() if isinstance(c, np.generic) else c for c in forest.classes_],
            "trees": [_tree_arrays(t) for t in forest.estimators_],
            "n": len(x),
        }

    def aggregate(self, updates: Sequence[Update], params: Params | None = None) -> Params:
        """One forest of every tree (MERGE) or one forest per node (MAJORITY_VOTE)."""
        updates = self._updates(updates)
        classes = sorted({c for u in updates for c in u["classes"]})
        forests = []
        for u in updates:
            cols = [classes.index(c) for c in u["classes"]]
            trees = []
            for t in u["trees"]:
                local = np.asarray(t["value"])
                value = np.zeros((len(local), len(classes)))
                value[:, cols] = local
                trees.append({**t, "value": value})
            forests.append(trees)
        if self.strategy == StrategyRandomForestClassifier.MERGE:
            forests = [[t for f in forests for t in f]]
        return {"classes": classes, "forests": forests, "strategy": self.strategy.value}

    def predict(self, X: Any, params: Params) -> np.ndarray[Any, Any]:
        """Class probabilities: tree averages (MERGE) or vote shares (MAJORITY_VOTE)."""
        # scikit-learn's trees compare float32 features with float64 thresholds.
        x = as_matrix(X, type(self).__name__).astype(np.float32).astype(np.float64)
        n_classes = len(params["classes"])
        per_forest = [
            np.mean([_tree_proba(t, x) for t in trees], axis=0) for trees in params["forests"]
        ]
        if params["strategy"] == StrategyRandomForestClassifier.MERGE.value:
            return np.asarray(per_forest[0])
        votes = np.zeros((len(x), n_classes))
        for proba in per_forest:
            votes[np.arange(len(x)), np.argmax(proba, axis=1)] += 1
        return votes / len(per_forest)
