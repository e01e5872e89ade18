"""The FedAvg worker: score the global model locally, then train it locally."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from shoal.runtime import Task

from .model import count_correct, make_model, train


def split_train_val(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """80% training and 20% validation indices, the same in every round."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = n // 5
    return order[n_val:], order[:n_val]


class Worker(Task):
    """One round of local work on one node."""

    def run(self) -> None:
        torch.set_num_threads(1)  # many workers share the machine's cores
        data = self.local.get_dataset("digits")  # a .npz: {"X": (n, 64), "y": (n,)}
        X, y = data["X"], data["y"]
        settings = self.world.globals
        seed = settings.get("seed", 0)
        train_idx, val_idx = split_train_val(len(y), seed)

        model = make_model(seed)
        weights = settings["weights"]  # None in the first round: the seed's model
        if weights is not None:
            model.load_state_dict(weights)

        self.world.results.add("val_correct", count_correct(model, X[val_idx], y[val_idx]))
        self.world.results.add("val_total", len(val_idx))

        node = zlib.crc32(self.world.node_id.encode())
        train(
            model,
            X[train_idx],
            y[train_idx],
            lr=settings["lr"],
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            seed=(seed * 1_000_003 + self.world.iteration * 7_919 + node) % 2**31,
        )
        # A state_dict of tensors: the codec moves torch tensors as raw bytes, no pickle.
        self.world.results.add("weights", {k: v.detach() for k, v in model.state_dict().items()})
        self.world.results.add("n_samples", len(train_idx))
