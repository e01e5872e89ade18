"""A digits worker written with shoal.strategies.train_round (softmax regression, SGD).

Nodes listed in the global "byzantine_nodes" send a corrupted update instead
(``attack``: "scale" multiplies it by -10, "random" replaces it by N(0, 10^2) noise).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from shoal.privacy import ExcludeVars
from shoal.runtime import Task
from shoal.strategies import LocalRound, train_round


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Worker(Task):
    def run(self) -> None:
        data = self.local.get_dataset("digits")
        X, y = data["X"], data["y"]
        g = self.world.globals
        lr, epochs = float(g["lr"]), int(g["epochs"])
        node = self.world.node_id
        rng = np.random.default_rng([self.world.iteration, zlib.crc32(node.encode())])
        onehot = np.eye(10)[y]

        def train(w: dict[str, Any], ctx: LocalRound) -> tuple[Any, ...]:
            W, b = np.array(w["W"]), np.array(w["b"])
            accuracy = float(np.mean(np.argmax(X @ W + b, axis=1) == y))  # global model
            for _ in range(epochs):
                order = rng.permutation(len(y))
                for s in range(0, len(y), 16):
                    i = order[s : s + 16]
                    err = (_softmax(X[i] @ W + b) - onehot[i]) / len(i)
                    grads = ctx.adjust({"W": X[i].T @ err, "b": err.sum(axis=0)}, {"W": W, "b": b})
                    W -= lr * grads["W"]
                    b -= lr * grads["b"]
            new = {"W": W, "b": b}
            if node in g.get("byzantine_nodes", []):
                x = ctx.global_weights
                if g["attack"] == "scale":
                    new = {k: x[k] - 10.0 * (new[k] - x[k]) for k in new}
                else:
                    new = {k: x[k] + rng.normal(0.0, 10.0, size=x[k].shape) for k in new}
            return new, len(y), {"accuracy": accuracy}

        exclude = g.get("exclude", [])
        filters = [ExcludeVars(tuple(exclude), zero=True)] if exclude else []
        train_round(self, train, local_lr=lr, filters=filters)


def main() -> None:
    Worker().run()
