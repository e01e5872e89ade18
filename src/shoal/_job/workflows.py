"""More built-in workflows: cyclic weight transfer and cross-site evaluation (seed 004).

Both compile to an ordinary plan (``shoal.job._run``), like FedAvg:

- :class:`Cyclic` passes one model from site to site, each training it in turn, for
  ``num_rounds`` rounds. ``order="random"`` is the engine's chain order
  (``Task(order="chain")``: a seeded order, new each round); ``order="fixed"`` is the
  sites in the order the job lists them, every round (one task per site, edges in
  that order).
- :class:`CrossSiteModelEval` (and the newer name :class:`CrossSiteEval`) asks every
  site for its local model (task ``submit_model``), then has every site evaluate every
  model, the server's global model included (task ``validate``): a matrix of metrics,
  ``{validator site: {model owner: {metric: value}}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shoal._errors import ShoalError
from shoal._job.objects import Controller

#: The name of the server's global model in a cross-site evaluation matrix (FLARE's).
SERVER_MODEL = "SRV_server"


def _positive(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ShoalError(
            f"{owner}({name}={value!r})", code="job.config", hint=f"{name} is an int >= 1"
        )


class Cyclic(Controller):
    """Cyclic weight transfer: the model visits every site in turn, each round.

    Parameters
    ----------
    num_clients
        Sites the model passes through each round (the first ``num_clients`` sites).
    num_rounds
        Rounds (each visits every site once).
    start_round
        The round number the first round reports (``FLModel.current_round``).
    persistor_id
        The component holding the initial model (``PTModel`` / ``NPModel``).
    task_name
        The task the sites run.
    order
        ``"fixed"``: the sites in the job's order every round (FLARE's default);
        ``"random"``: the engine's seeded chain order, a new order each round.
    """

    def __init__(
        self,
        num_clients: int = 2,
        num_rounds: int = 5,
        start_round: int = 0,
        persistor_id: str = "persistor",
        task_name: str = "train",
        order: str = "fixed",
    ) -> None:
        _positive("Cyclic", "num_clients", num_clients)
        _positive("Cyclic", "num_rounds", num_rounds)
        order = str(getattr(order, "value", order)).lower()
        if order not in ("fixed", "random"):
            raise ShoalError(
                f"Cyclic(order={order!r})",
                code="job.config",
                hint="order is 'fixed' (the job's site order) or 'random' (seeded, per round)",
            )
        self.num_clients = num_clients
        self.num_rounds = num_rounds
        self.start_round = start_round
        self.persistor_id = persistor_id
        self.task_name = task_name
        self.order = order


class CrossSiteModelEval(Controller):
    """Every site's model evaluated on every site's data: a matrix of metrics.

    Parameters
    ----------
    submit_model_task_name
        The task that asks a site for its local model.
    validation_task_name
        The task that asks a site to evaluate one model.
    participating_clients
        The sites taking part (default: every site of the job).
    cross_val_dir
        Folder (under the server's workspace) of ``cross_val_results.json``.
    model_locator_id
        Accepted for FLARE's signature: the server model is the persistor's.
    submit_model_timeout, validation_timeout
        Seconds each site's task may take.
    """

    def __init__(
        self,
        submit_model_task_name: str = "submit_model",
        validation_task_name: str = "validate",
        participating_clients: Sequence[str] | None = None,
        cross_val_dir: str = "cross_site_val",
        model_locator_id: str = "",
        submit_model_timeout: int = 600,
        validation_timeout: int = 6000,
    ) -> None:
        for n, v in (("submit_model_timeout", submit_model_timeout),
                     ("validation_timeout", validation_timeout)):  # fmt: skip
            _positive(type(self).__name__, n, v)
        self.submit_model_task_name = submit_model_task_name
        self.validation_task_name = validation_task_name
        self.participating_clients = (
            list(participating_clients) if participating_clients is not None else None
        )
        self.cross_val_dir = cross_val_dir
        self.model_locator_id = model_locator_id
        self.submit_model_timeout = submit_model_timeout
        self.validation_timeout = validation_timeout


class CrossSiteEval(CrossSiteModelEval):
    """FLARE's newer name for :class:`CrossSiteModelEval` (the same workflow).

    Parameters
    ----------
    persistor_id
        The component holding the server's model (evaluated as ``SRV_server``).
    submit_model_task_name, validation_task_name, participating_clients, cross_val_dir
        As for :class:`CrossSiteModelEval`.
    submit_model_timeout, validation_timeout
        As for :class:`CrossSiteModelEval`.
    """

    def __init__(
        self,
        persistor_id: str = "persistor",
        submit_model_task_name: str = "submit_model",
        validation_task_name: str = "validate",
        participating_clients: Sequence[str] | None = None,
        cross_val_dir: str = "cross_site_val",
        submit_model_timeout: int = 600,
        validation_timeout: int = 6000,
    ) -> None:
        super().__init__(
            submit_model_task_name,
            validation_task_name,
            participating_clients,
            cross_val_dir,
            "",
            submit_model_timeout,
            validation_timeout,
        )
        self.persistor_id = persistor_id
