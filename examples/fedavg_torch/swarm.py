"""FedAvg of a small CNN (PyTorch, CPU) on scikit-learn's 8x8 digits: the swarm.

Every round (one shoal iteration):

1. ``worker`` (every node holding a "digits" dataset) scores the global model on its
   local validation split, then trains it for ``epochs`` local epochs and publishes
   its weights (a ``state_dict`` of torch tensors) and its sample count.
2. ``aggregator`` (one node) averages the weights, weighted by sample count, writes the
   global "weights" and logs the federated validation accuracy as the metric
   ``val_accuracy``.

The global "weights" start as ``None``: every worker then builds the model from the
seed, so all nodes start from the same initial model without this file importing torch.
"""

from __future__ import annotations

from shoal import Module, Swarm, Task


class FedAvgTorch(Swarm):
    """Federated averaging of a small CNN on the digits dataset.

    Parameters
    ----------
    rounds
        Number of FedAvg rounds.
    seed
        Seed of the initial model, the local splits and the minibatch order.
    """

    def __init__(self, rounds: int = 5, seed: int = 0) -> None:
        super().__init__()
        self.name = "fedavg_torch"
        self.max_iterations = rounds
        self.set_global("weights", None)
        self.set_global("lr", 0.05)
        self.set_global("epochs", 2)
        self.set_global("batch_size", 32)
        self.set_global("seed", seed)

        self.worker = Task(
            Module("modules/worker", datasets=["digits"], name="torch_worker"),
            method="all",
            alias="worker",
        )
        self.aggregator = Task(
            Module("modules/aggregator.py", name="torch_aggregator"),
            method="any",
            maximum=1,
            alias="aggregator",
        )

    def execute(self) -> Task:
        """Workers -> aggregator, repeated every round."""
        return self.aggregator(self.worker())
