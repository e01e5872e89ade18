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

from shoal._errors import ShoalError
from shoal._job.client import FLModel, ParamsType, Session
from shoal._job.script import run_executor, run_external, run_in_process
from shoal._job.workflows import SERVER_MODEL
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


def _import_here(here: Path) -> None:
    """The job's shipped files (scripts, user executors and filters) importable."""
    import sys

    if str(here) not in sys.path:
        sys.path.insert(0, str(here))


def _routes(config: dict[str, Any], site: str) -> dict[str, list[Any]]:
    """This site's executors (its own app's first, then every client's) and filters
    (every client's first, then its own)."""
    apps = config["sites"]
    own, every = apps.get(site, {}), apps.get("@ALL", {})
    return {
        "executors": [*own.get("executors", []), *every.get("executors", [])],
        "task_data_filters": [
            *every.get("task_data_filters", []),
            *own.get("task_data_filters", []),
        ],
        "task_result_filters": [
            *every.get("task_result_filters", []),
            *own.get("task_result_filters", []),
        ],
    }


def _routed(entries: list[Any], task_name: str) -> Any:
    for e in entries:
        if "*" in e["tasks"] or task_name in e["tasks"]:
            return e
    return None


def site_round(
    task: Task, here: Path, config: dict[str, Any], task_name: str, model: FLModel
) -> Session:
    """Run ``task_name`` on this site: the executor routed to it, between the filters
    routed to it. Returns the finished session (``sent`` is the result)."""
    _import_here(here)
    site = task.world.node_id
    routes = _routes(config, site)
    entry = _routed(routes["executors"], task_name)
    if entry is None:
        raise ShoalError(
            f"job {config['name']!r}: no executor on {site!r} handles task {task_name!r}",
            code="job.config",
            hint=f"route one to it: job.to(executor, {site!r}, tasks=[{task_name!r}]) "
            "(tasks defaults to every task)",
        )
    data_filters = [(f["tasks"], build(f["filter"])) for f in routes["task_data_filters"]]
    result_filters = [(f["tasks"], build(f["filter"])) for f in routes["task_result_filters"]]
    where = (site, config["name"], task_name, model, data_filters, result_filters)
    if "executor" in entry:
        return run_executor(build(entry["executor"]), *where)
    runner = entry["runner"]
    m = re.search(r"(\d+)$", site)
    args = runner["script_args"].replace("{i}", m.group(1) if m else site).replace("{site}", site)
    script = here / Path(runner["script"]).name
    if runner.get("external"):
        return run_external(_command(runner["command"]), script, args.split(), *where)
    return run_in_process(script, args.split(), *where)


def _framework(config: dict[str, Any], site: str, task_name: str) -> str:
    entry = _routed(_routes(config, site)["executors"], task_name)
    return str(entry["runner"]["framework"]) if entry and "runner" in entry else "numpy"


def _result(sent: FLModel, w: dict[str, Any]) -> dict[str, np.ndarray]:
    """The sent params as float64 NumPy, DIFF applied, variables kept back filled in."""
    assert sent.params is not None
    new = _to_numpy(sent.params)
    if sent.params_type in (ParamsType.DIFF, "DIFF"):
        new = {k: np.asarray(w[k], dtype=np.float64) + new[k] for k in w}
    # a variable a filter kept on the site counts as "no change" (a zero update)
    for k in w:
        new.setdefault(k, np.asarray(w[k], dtype=np.float64))
    return new


def _metrics(session: Session) -> dict[str, float]:
    sent = session.sent
    assert sent is not None
    metrics = {k: float(v) for k, v in (sent.metrics or {}).items()}
    for key, value, _ in session.logs:
        if isinstance(value, (int, float)):
            metrics.setdefault(key, float(value))
    return metrics


def run_site(task: Task, here: Path, config: dict[str, Any]) -> None:
    """One task on this site; which one the task's alias says (FedAvg's ``train``,
    Cyclic's relay, cross-site evaluation's ``submit`` and ``validate``)."""
    alias = task.world.alias
    if alias.startswith("relay"):
        run_relay(task, here, config)
    elif alias == "submit":
        run_submit(task, here, config)
    elif alias == "validate":
        run_validate(task, here, config)
    else:
        run_fedavg_site(task, here, config)


def run_fedavg_site(task: Task, here: Path, config: dict[str, Any]) -> None:
    """One FedAvg round on this site (``config`` is the job's site description)."""
    site = task.world.node_id
    iteration = task.world.iteration
    task_name = config["task_name"]
    framework = _framework(config, site, task_name)

    def train(w: dict[str, Any], ctx: LocalRound) -> tuple[Any, ...]:
        model = FLModel(
            params=_to_framework(dict(w), framework),
            current_round=iteration,
            total_rounds=config["num_rounds"],
        )
        session = site_round(task, here, config, task_name, model)
        sent = session.sent
        assert sent is not None and sent.params is not None
        steps = float((sent.meta or {}).get("NUM_STEPS_CURRENT_ROUND", 1))
        return _result(sent, w), steps, _metrics(session)

    train_round(task, train)


def run_relay(task: Task, here: Path, config: dict[str, Any]) -> None:
    """Cyclic: train the model the site before sent (the global model at a round's
    start) and pass it on as result ``model``."""
    site = task.world.node_id
    task_name = config["task_name"]
    got = task.world.results.select("model")
    w = next(iter(got.values())) if got else task.world.globals["weights"]
    model = FLModel(
        params=_to_framework(dict(w), _framework(config, site, task_name)),
        current_round=config.get("start_round", 0) + task.world.iteration,
        total_rounds=config["num_rounds"],
    )
    session = site_round(task, here, config, task_name, model)
    assert session.sent is not None and session.sent.params is not None
    task.world.results.add("model", _result(session.sent, w))
    task.world.results.add("metrics", _metrics(session))


def run_submit(task: Task, here: Path, config: dict[str, Any]) -> None:
    """Cross-site evaluation: this site's local model, as result ``submitted``."""
    site = task.world.node_id
    task_name = config["submit_task_name"]
    w = task.world.globals.get("weights")
    params = _to_framework(dict(w), _framework(config, site, task_name)) if w else None
    session = site_round(task, here, config, task_name, FLModel(params=params))
    sent = session.sent
    if sent is None or not sent.params:
        raise ShoalError(
            f"{site!r} submitted no model for cross-site evaluation",
            code="job.config",
            hint=f"on task {task_name!r} (flare.is_submit_model()) send the local model",
        )
    task.world.results.add("submitted", _to_numpy(sent.params))


def run_validate(task: Task, here: Path, config: dict[str, Any]) -> None:
    """Cross-site evaluation: evaluate every submitted model (and the server's) here;
    result ``metrics`` is ``{model owner: {metric: value}}``."""
    site = task.world.node_id
    task_name = config["validation_task_name"]
    framework = _framework(config, site, task_name)
    models = dict(sorted(task.world.results.select("submitted").items()))
    server = task.world.globals.get("weights")
    if server:
        models = {SERVER_MODEL: server, **models}
    row: dict[str, dict[str, float]] = {}
    for owner, w in models.items():
        model = FLModel(params=_to_framework(dict(w), framework), meta={"model_owner": owner})
        row[owner] = _metrics(site_round(task, here, config, task_name, model))
    task.world.results.add("metrics", row)
