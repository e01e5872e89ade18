"""Evaluation that is right for any number of classes, and for regressors.

Every result is JSON-ready (floats, lists, dicts with string keys). A confusion matrix
is labelled: ``{"labels": [...], "matrix": rows = true label, columns = predicted}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shoal._steps.learn._deps import LearnError


def _safe(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def auc_binary(positive: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> float | None:
    """ROC AUC by the rank statistic (ties count one half); None without both classes."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def from_confusion(labels: Sequence[Any], matrix: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Accuracy and per-class / macro precision, recall and F1 of a confusion matrix."""
    m = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(m).astype(np.float64)
    predicted, actual = m.sum(axis=0), m.sum(axis=1)
    per_class: dict[str, dict[str, float]] = {}
    for i, label in enumerate(labels):
        p, r = _safe(tp[i], predicted[i]), _safe(tp[i], actual[i])
        per_class[str(label)] = {
            "precision": p,
            "recall": r,
            "f1": _safe(2 * p * r, p + r),
            "support": int(actual[i]),
        }
    macro = {
        k: float(np.mean([c[k] for c in per_class.values()])) if per_class else 0.0
        for k in ("precision", "recall", "f1")
    }
    return {
        "n": int(m.sum()),
        "accuracy": _safe(tp.sum(), m.sum()),
        "per_class": per_class,
        "macro": macro,
        "confusion_matrix": {"labels": list(labels), "matrix": m.tolist()},
    }


def classification(
    y_true: Any, y_pred: Any, labels: Sequence[Any], proba: np.ndarray[Any, Any] | None = None
) -> dict[str, Any]:
    """Every classification metric of one set of predictions.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels.
    labels
        Every class, in the order of ``proba``'s columns and of the confusion matrix.
    proba
        Class probabilities, (n, len(labels)); gives one-vs-rest ``auc`` per class and
        their macro mean (classes absent from ``y_true``, or the only one, are None and
        left out of the mean).
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({v for v in yt.tolist() if v not in index}, key=repr)
    if unknown:
        raise LearnError(
            f"evaluation labels {unknown} are not among the model's classes {list(labels)}",
            code="learn.params",
            hint="train on data that has every class, or filter those rows out",
        )
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(yt.tolist(), yp.tolist(), strict=True):
        m[index[t], index[p]] += 1
    out = from_confusion(labels, m)
    if proba is not None:
        aucs = {
            str(label): auc_binary(yt == label, np.asarray(proba)[:, i])
            for i, label in enumerate(labels)
        }
        present = [a for a in aucs.values() if a is not None]
        out["auc"] = {"per_class": aucs, "macro": float(np.mean(present)) if present else None}
    return out


def merge_classification(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled metrics from nodes' results: confusion matrices summed (exact).

    AUC cannot be pooled from per-node AUCs exactly; the macro AUC here is the mean of
    the nodes' macro AUCs weighted by their counts, marked ``auc_pooled: False``.
    """
    labels = results[0]["confusion_matrix"]["labels"]
    total = np.sum([r["confusion_matrix"]["matrix"] for r in results], axis=0)
    out = from_confusion(labels, total)
    weighted = [(r["auc"]["macro"], r["n"]) for r in results if r.get("auc", {}).get("macro")]
    if weighted:
        out["auc"] = {
            "macro": float(np.average([a for a, _ in weighted], weights=[n for _, n in weighted]))
        }
        out["auc_pooled"] = False
    return out


def regression(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """n, MSE, RMSE, MAE and R² of a regressor's predictions."""
    yt, yp = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    err = yt - yp
    mse = float(np.mean(err**2)) if len(yt) else 0.0
    ss_tot = float(np.sum((yt - yt.mean()) ** 2)) if len(yt) else 0.0
    return {
        "n": len(yt),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))) if len(yt) else 0.0,
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot else 0.0,
    }
