"""A user's ``ModelController.run()`` as a controller task (task-side code).

The server task rebuilds the controller from its class's file (copied into the task's
bundle) and constructor arguments, binds it to :class:`TaskBackend` and calls
``run()``. Each ``send_model_and_wait`` is one ``world.invoke`` of the sites'
on-demand task ``client``, which runs the site's script on the model it is sent
(:func:`run_client`) and replies with the FLModel the script sent.
"""

from __future__ import annotations

import importlib
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shoal._codec import decode
from shoal._errors import ShoalError
from shoal._job.client import FLModel, ParamsType
from shoal._job.model_controller import model_from_wire, model_to_wire
from shoal.job._site import _framework, _to_framework, _to_numpy, site_round
from shoal.runtime import Task

#: The sites' on-demand task.
CLIENT_ALIAS = "client"


class TaskBackend:
    """A running controller's link to the swarm: sampling, ``world.invoke``, globals."""

    def __init__(self, task: Task, config: dict[str, Any]) -> None:
        self._task = task
        self._config = config
        self._rounds = 0  # sample_clients calls so far: each samples anew, seeded

    def sample(self, num_clients: int | None) -> list[str]:
        sites = sorted(self._config["sites"])
        n = len(sites) if num_clients is None else int(num_clients)
        if not 1 <= n <= len(sites):
            raise ShoalError(
                f"sample_clients({num_clients}) with {len(sites)} sites",
                code="job.config",
                hint=f"ask for 1 to {len(sites)} sites",
            )
        rng = random.Random(f"{self._config['seed']}/{self._rounds}")
        self._rounds += 1
        return sorted(rng.sample(sites, n))

    def send(self, targets: Sequence[str] | None, data: FLModel, task_name: str) -> list[FLModel]:
        nodes = sorted(self._config["sites"]) if targets is None else [str(t) for t in targets]
        if not isinstance(data, FLModel):
            raise ShoalError(
                f"send_model_and_wait(data={type(data).__name__}) is not an FLModel",
                code="job.config",
                hint="pass data=FLModel(params=..., current_round=r)",
            )
        least = min(int(self._config["min_clients"]), len(nodes))
        replies = self._task.world.invoke(
            CLIENT_ALIAS,
            nodes=nodes,
            inputs={"task_name": task_name, "model": model_to_wire(data)},
            min_results=least,
        )
        out = []
        for node in sorted(replies):
            model = model_from_wire(replies[node])
            model.meta["client_name"] = node
            out.append(model)
        return out

    def load(self) -> FLModel:
        weights = self._task.world.globals["weights"]
        return FLModel(params=dict(weights), params_type=ParamsType.FULL, current_round=0)

    def save(self, model: FLModel) -> None:
        params = model.params if isinstance(model, FLModel) else model
        self._task.world.globals["weights"] = _to_numpy(dict(params or {}))

    def log(self, level: str, message: str) -> None:
        self._task.logger.log(level, message)


def run_controller(here: Path, config: dict[str, Any]) -> None:
    """The server's controller task: rebuild the user's controller and run it."""
    spec = decode((here / "controller.msgpack").read_bytes())
    sys.path.insert(0, str(here / "controller"))
    try:
        module = importlib.import_module(spec["module"])
    finally:
        sys.path.remove(str(here / "controller"))
    cls: Any = module
    for part in spec["class"].split("."):
        cls = getattr(cls, part)
    controller = cls(**spec["args"])
    controller._backend = TaskBackend(Task(), config)
    controller.run()


def run_client(here: Path, config: dict[str, Any]) -> None:
    """A site's on-demand task: run the executor routed to the sent task name (between
    its filters) on the model the controller sent, as a built-in workflow's site does."""
    task = Task()
    sent = task.world.inputs
    site = task.world.node_id
    task_name = str(sent["task_name"])
    model = model_from_wire(sent["model"])
    model.params = _to_framework(dict(model.params or {}), _framework(config, site, task_name))
    session = site_round(task, here, config, task_name, model)
    result = session.sent
    if result is None:
        raise ShoalError(
            f"the script on {site} ended without flare.send() for task {task_name!r}",
            code="job.config",
            hint="call flare.send(FLModel(...)) once per received model",
        )
    reply = model_to_wire(result)
    if reply["params"] is not None:
        reply["params"] = {k: np.asarray(v) for k, v in reply["params"].items()}
    task.world.reply(reply)
