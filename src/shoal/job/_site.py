"""What a site runs for one round of a built-in controller (task-side code).

The generated worker module calls :func:`run_site`: it rebuilds the site's filters from
the job description, gives the script the global model as an FLModel, runs the script
(its ``__main__`` in this task process, or ``command script args`` as a child process
over the same task channel) and reports the sent model through
:func:`shoal.strategies.train_round`, so the server step is shoal.strategies' code.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from shoal._job.client import FLModel, ParamsType
from shoal._job.script import run_external, run_in_process
from shoal.runtime import Task
from shoal.strategies import LocalRound, train_round


def build(spec: Any) -> Any:
    """The object a ``{"path", "args"}`` description stands for (built-ins and importables)."""
    module, _, name = spec["path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**spec["args"])


def _to_framework(params: dict[str, Any], framework: str) -> dict[str, Any]:
    if framework != "pytorch":
        return params
    import torch

    return {k: torch.as_tensor(np.array(v, dtype=np.float32)) for k, v in params.items()}


def _to_numpy(params: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v, dtype=np.float64)
    return out


def _command(command: str) -> str:
    """``command`` with a leading ``python``/``python3`` as this node's interpreter.

    The script imports ``shoal.job.client``: it must run under the interpreter (or
    image) the node gave the task, not whatever ``python3`` is first on PATH.
    """
    import shlex
    import sys

    parts = shlex.split(command)
    if parts and re.fullmatch(r"python(3(\.\d+)?)?", parts[0]):
        parts[0] = sys.executable
    return shlex.join(parts)


def run_site(task: Task, here: Path, config: dict[str, Any]) -> None:
    """One round on this site (``config`` is the job's site description)."""
    site = task.world.node_id
    mine = config["sites"].get(site) or config["sites"]["@ALL"]
    runner = mine["runner"]
    data_filters = [(f["tasks"], build(f["filter"])) for f in mine["task_data_filters"]]
    result_filters = [(f["tasks"], build(f["filter"])) for f in mine["task_result_filters"]]
    m = re.search(r"(\d+)$", site)
    args = runner["script_args"].replace("{i}", m.group(1) if m else site).replace("{site}", site)
    iteration = task.world.iteration

    def train(w: dict[str, Any], ctx: LocalRound) -> tuple[Any, ...]:
        model = FLModel(
            params=_to_framework(dict(w), runner["framework"]),
            current_round=iteration,
            total_rounds=config["num_rounds"],
        )
        where = (site, config["name"], config["task_name"], model, data_filters, result_filters)
        script = here / Path(runner["script"]).name
        if runner.get("external"):
            session = run_external(_command(runner["command"]), script, args.split(), *where)
        else:
            session = run_in_process(script, args.split(), *where)
        sent = session.sent
        assert sent is not None and sent.params is not None
        new = _to_numpy(sent.params)
        if sent.params_type in (ParamsType.DIFF, "DIFF"):
            new = {k: np.asarray(w[k], dtype=np.float64) + new[k] for k in w}
        # a variable a filter kept on the site counts as "no change" (a zero update)
        for k in w:
            new.setdefault(k, np.asarray(w[k], dtype=np.float64))
        steps = float((sent.meta or {}).get("NUM_STEPS_CURRENT_ROUND", 1))
        metrics = {k: float(v) for k, v in (sent.metrics or {}).items()}
        for key, value, _ in session.logs:
            if isinstance(value, (int, float)):
                metrics.setdefault(key, float(value))
        return new, steps, metrics

    train_round(task, train)
