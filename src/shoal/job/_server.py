"""The server task of a built-in controller: shoal.strategies' aggregator, then FedAvg's
stop condition and patience (task-side code)."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from shoal.runtime import Task
from shoal.strategies._entry import run_aggregator
from shoal.strategies._keys import history_key

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


def should_stop(history: list[Mapping[str, float]], stop: Any, patience: int | None) -> str:
    """Why to stop after the last round ('' to go on).

    ``stop`` is ``[metric, op, number]``: met by the last round's (weighted) metric.
    ``patience``: that metric has not improved for ``patience`` rounds (improving means
    moving the way ``op`` asks: up for ``>``/``>=``, down for ``<``/``<=``).
    """
    if not history or stop is None:
        return ""
    name, op, target = stop[0], stop[1], float(stop[2])
    values = [float(h[name]) for h in history if name in h]
    if not values:
        return ""
    if _OPS[op](values[-1], target):
        return f"{name} {values[-1]:.4g} {op} {target:g}"
    if patience and len(values) > patience:
        sign = -1.0 if op in ("<", "<=") else 1.0
        before = max(sign * v for v in values[:-patience])
        if max(sign * v for v in values[-patience:]) <= before:
            return f"{name} did not improve for {patience} rounds"
    return ""


def run_server(config: Mapping[str, Any]) -> None:
    """One round on the server: aggregate, then maybe stop the job."""
    run_aggregator(config["aggregator"])
    if config.get("stop") is None:
        return
    task = Task()
    history = task.world.globals.get(history_key(config["aggregator"]["key"])) or []
    why = should_stop(list(history), config["stop"], config.get("patience"))
    if why:
        task.logger.info(f"stopping after round {task.world.iteration}: {why}")
        task.world.stop_swarm()


def run_relay_server() -> None:
    """Cyclic, after a round: the model the last site passed on is the global model."""
    task = Task()
    got = task.world.results.select("model")
    if len(got) != 1:
        raise RuntimeError(
            f"cyclic round {task.world.iteration}: expected one model, got {len(got)}"
        )
    (task.world.globals["weights"],) = got.values()


def run_cross_site_server() -> None:
    """Cross-site evaluation: the sites' rows as the matrix ``cross_val_results``
    (``{validator site: {model owner: {metric: value}}}``)."""
    task = Task()
    rows = task.world.results.select("metrics")
    task.world.globals["cross_val_results"] = {site: rows[site] for site in sorted(rows)}
