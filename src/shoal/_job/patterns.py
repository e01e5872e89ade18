"""Job patterns: FedJob subclasses that set up the usual objects (seed 004)."""

from __future__ import annotations

from typing import Any

from shoal._job.fed_job import FedJob
from shoal._job.objects import FedAvg, IntimeModelSelector, PTModel


class FedAvgJob(FedJob):
    """A FedAvg job: the FedAvg controller, the model and a model selector on the server.

    Parameters
    ----------
    name
        The job's name.
    n_clients
        Sites per round (and the job's ``min_clients``).
    num_rounds
        Rounds.
    initial_model
        A ``torch.nn.Module`` (the initial global model).
    key_metric
        The metric the model selector keeps the best model by.
    """

    def __init__(
        self,
        name: str,
        n_clients: int,
        num_rounds: int,
        initial_model: Any,
        key_metric: str = "accuracy",
    ) -> None:
        super().__init__(name=name, min_clients=n_clients)
        self.num_rounds = num_rounds
        self.n_clients = n_clients
        self.initial_model = initial_model
        self.to_server(FedAvg(num_clients=n_clients, num_rounds=num_rounds))
        self.to_server(PTModel(initial_model))
        self.to_server(IntimeModelSelector(key_metric=key_metric))
