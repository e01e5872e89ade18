"""Softmax regression (multinomial logistic regression) in plain numpy.

The model is a dict ``{"W": (n_features, n_classes), "b": (n_classes,)}``, the form it
has in the swarm's global "weights".
"""

from __future__ import annotations

import numpy as np


def predict(weights: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Predicted class of every row of ``X``."""
    return np.argmax(X @ weights["W"] + weights["b"], axis=1)


def count_correct(weights: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> int:
    """How many rows of ``X`` the model classifies correctly."""
    if len(y) == 0:
        return 0
    return int(np.sum(predict(weights, X) == y))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)  # for numerical stability
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(
    weights: dict[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Minibatch SGD on the cross-entropy loss, starting from ``weights``.

    Returns new arrays; ``weights`` is not modified (arrays read from globals are
    read-only anyway).
    """
    W = np.array(weights["W"], dtype=np.float64)  # np.array copies
    b = np.array(weights["b"], dtype=np.float64)
    onehot = np.eye(W.shape[1])[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            probs = _softmax(X[batch] @ W + b)
            grad = (probs - onehot[batch]) / len(batch)  # d loss / d logits
            W -= lr * (X[batch].T @ grad)
            b -= lr * grad.sum(axis=0)
    return {"W": W, "b": b}
