"""The FedAvg worker: score the global model locally, then train it locally."""

from __future__ import annotations

import zlib

import numpy as np

from shoal.runtime import Task

from .model import count_correct, train


def split_train_val(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` local samples into 80% training and 20% validation indices.

    The split depends only on ``n`` and ``seed``, so it is the same in every round:
    validation samples are never trained on.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_val = n // 5
    return order[n_val:], order[:n_val]


class Worker(Task):
    """One round of local work on one node."""

    def run(self) -> None:
        data = self.local.get_dataset("digits")  # a .npz: {"X": (n, 64), "y": (n,)}
        X, y = data["X"], data["y"]

        settings = self.world.globals
        seed = settings.get("seed", 0)
        train_idx, val_idx = split_train_val(len(y), seed)
        weights = settings["weights"]  # the global model after the last round

        # 1. Federated validation: how good is the current global model here?
        self.world.results.add("val_correct", count_correct(weights, X[val_idx], y[val_idx]))
        self.world.results.add("val_total", len(val_idx))

        # 2. Local training from the global weights. The minibatch order differs per
        # round and per node, but is reproducible.
        node = zlib.crc32(self.world.node_id.encode())
        rng = np.random.default_rng([seed, self.world.iteration, node])
        new_weights = train(
            weights,
            X[train_idx],
            y[train_idx],
            lr=settings["lr"],
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            rng=rng,
        )
        self.world.results.add("weights", new_weights)
        self.world.results.add("n_samples", len(train_idx))
        self.logger.debug(
            f"round {self.world.iteration}: trained on {len(train_idx)} samples, "
            f"validated on {len(val_idx)}"
        )
