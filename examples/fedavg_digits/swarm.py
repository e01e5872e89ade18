"""FedAvg on scikit-learn's handwritten digits: the swarm definition.

Every round (one shoal iteration):

1. ``worker`` (every node holding a "digits" dataset) scores the current global model
   on its local validation split, then trains it for a few epochs on its local
   training split and publishes the new weights and its sample count.
2. ``aggregator`` (one node) averages the weights, weighted by sample count (FedAvg),
   writes them to the global "weights", and turns the validation counts into one
   federated validation accuracy.
3. ``scheduler`` (one node) records that accuracy and stops the swarm once it has
   stopped improving, or after ``max_rounds`` rounds.

The model is a softmax regression on the 8x8 = 64 pixels, so the global model is
``{"W": (64, 10) array, "b": (10,) array}``; it starts at zero, which makes every run
deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np

from shoal import Module, Swarm, Task

N_FEATURES = 64  # 8 x 8 pixels, scaled to [0, 1]
N_CLASSES = 10  # the digits 0-9


class FedAvgDigits(Swarm):
    """Federated averaging of a softmax regression on the digits dataset.

    Parameters
    ----------
    max_rounds
        Upper bound on the number of rounds; the scheduler usually stops earlier.
    seed
        Seed of the workers' train/validation split and minibatch order.
    """

    def __init__(self, max_rounds: int = 50, seed: int = 0) -> None:
        super().__init__()
        self.name = "fedavg_digits"
        # A hard cap as a safety net: the scheduler task stops the swarm itself.
        self.max_iterations = max_rounds

        # The global model every worker starts a round from.
        self.set_global(
            "weights",
            {"W": np.zeros((N_FEATURES, N_CLASSES)), "b": np.zeros(N_CLASSES)},
        )
        # Local training (read by the workers).
        self.set_global("lr", 1.0)
        self.set_global("epochs", 2)
        self.set_global("batch_size", 16)
        self.set_global("seed", seed)
        # Stopping rule (read by the scheduler): stop when the best validation accuracy
        # of the last `patience` rounds is no more than `min_delta` above the best before.
        self.set_global("max_rounds", max_rounds)
        self.set_global("patience", 5)
        self.set_global("min_delta", 0.002)

        # Relative paths are resolved against this file's folder.
        self.worker = Task(
            Module(
                python_program="modules/worker",  # a package: modules/worker/__init__.py
                image="python",
                datasets=["digits"],
                name="fl_worker",
            ),
            method="all",
            maximum=-1,
            alias="worker",
        )
        self.aggregator = Task(
            Module(python_program="modules/aggregator.py", image="python", name="fl_aggregator"),
            method="any",
            maximum=1,
            alias="aggregator",
        )
        self.scheduler = Task(
            Module(python_program="modules/scheduler.py", image="python", name="fl_scheduler"),
            method="any",
            maximum=1,
            alias="scheduler",
        )

    def execute(self) -> Task:
        """Workers -> aggregator -> scheduler, repeated every round."""
        return self.scheduler(self.aggregator(self.worker()))
