"""The result of a simulation: status, globals, results, logs and metrics."""

from __future__ import annotations

import json
import shutil
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal._api.records import (
    FailureRecord,
    LogRecord,
    log_record,
    metric_record,
)
from shoal._engine import Engine
from shoal._errors import ShoalError, SwarmFailedError
from shoal._metrics.plot import plot as plot_metric
from shoal._metrics.table import frame_or_records
from shoal._plan import Plan
from shoal._runtime.api import ResultRecord
from shoal._store.base import Store
from shoal._wire import from_wire


@dataclass(frozen=True)
class TaskTiming:
    """Instance durations of one task over the whole run."""

    alias: str
    instances: int
    total_s: float
    mean_s: float
    max_s: float
    module: str = ""  # the task's module and its version (None if it has none)
    version: str | None = None


@dataclass(frozen=True)
class RunningInstance:
    """An instance a worker runs now, as a live display shows it."""

    instance_id: str
    alias: str
    node_id: str
    iteration: int
    age_s: float
    timeout_s: float | None


class SimulationInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a simulation cleanly; ``run`` is the stopped run (status
    ``"stopped"``) with every log, metric and result so far."""

    def __init__(self, run: SimulationRun) -> None:
        super().__init__(f"swarm {run.plan.name!r} stopped by Ctrl-C")
        self.run = run


class RunGlobals:
    """``run.globals[key]``: the final value of each global."""

    def __init__(self, store: Store, swarm_id: str) -> None:
        self._store = store
        self._swarm_id = swarm_id

    def __getitem__(self, key: str) -> Any:
        found = self._store.global_get(self._swarm_id, key)
        if found is None:
            raise KeyError(key)
        return from_wire(found[1])

    def get(self, key: str, default: Any = None) -> Any:
        """The final value of ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        """Every global key."""
        return self._store.global_keys(self._swarm_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store.global_get(self._swarm_id, key) is not None

    def history(self, key: str) -> dict[int, Any]:
        """``{iteration: value}`` after each iteration that wrote it (-1: the initial value)."""
        return {it: from_wire(w) for it, w in self._store.global_history(self._swarm_id, key)}


class RunResults:
    """``run.results``: results queried like ``world.results``."""

    def __init__(self, store: Store, swarm_id: str, plan: Plan, iterations: int) -> None:
        self._store = store
        self._swarm_id = swarm_id
        self._plan = plan
        self._last = max(iterations - 1, 0)

    def _rows(self, tag: str, alias: str | None, iteration: int | None) -> list[Any]:
        it = self._last if iteration is None else iteration
        aliases = [alias] if alias is not None else [t.alias for t in self._plan.tasks]
        return [r for a in aliases for r in self._store.results_of_task(self._swarm_id, it, a, tag)]

    def select(
        self, tag: str, alias: str | None = None, iteration: int | None = None
    ) -> dict[str, Any]:
        """``{node_id: value}`` of ``tag`` in ``iteration`` (default: the last one)."""
        out: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for r in self._rows(tag, alias, iteration):
            if r.node_id in owner:
                raise ShoalError(
                    f"results.select({tag!r}) found two results from node {r.node_id!r} "
                    f"(tasks {owner[r.node_id]!r} and {r.alias!r})",
                    code="world.select_collision",
                    hint="pass alias= to choose the task, or use select_all(tag)",
                )
            owner[r.node_id] = r.alias
            out[r.node_id] = from_wire(r.value)
        return out

    def tags(self, alias: str, iteration: int | None = None) -> list[str]:
        """Tags task ``alias`` stored in ``iteration`` (default: the last one)."""
        it = self._last if iteration is None else iteration
        return self._store.result_tags(self._swarm_id, it, alias)

    def select_all(
        self, tag: str, alias: str | None = None, iteration: int | None = None
    ) -> list[ResultRecord]:
        """Every record of ``tag`` (:class:`shoal.runtime.ResultRecord`: alias, node_id,
        iteration and value)."""
        return [
            ResultRecord(r.alias, r.node_id, r.iteration, from_wire(r.value))
            for r in self._rows(tag, alias, iteration)
        ]


@dataclass
class SimulationRun:
    """What :func:`shoal.simulate` returns.

    Attributes
    ----------
    status
        ``"succeeded"``, ``"failed"`` or ``"stopped"``.
    reason
        Why the swarm ended.
    iterations
        How many iterations started.
    failures
        Every failed instance (:class:`~shoal.FailureRecord`) with its node id, kind,
        error and traceback.
    globals, results
        Final globals (``run.globals[key]``) and results (``run.results.select(...)``).
    run_dir
        Where blobs, logs and the summary of this run are kept.
    """

    swarm_id: str
    plan: Plan
    status: str
    reason: str
    iterations: int
    failures: tuple[FailureRecord, ...]
    timings: list[TaskTiming]
    wall_s: float
    run_dir: Path
    _store: Store = field(repr=False)
    _engine: Engine = field(repr=False)
    _cleanup: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.globals = RunGlobals(self._store, self.swarm_id)
        self.results = RunResults(self._store, self.swarm_id, self.plan, self.iterations)
        if self._cleanup:
            weakref.finalize(self, shutil.rmtree, self.run_dir, True)

    @property
    def ok(self) -> bool:
        """Whether the swarm succeeded."""
        return self.status == "succeeded"

    def raise_for_status(self) -> None:
        """Raise unless the swarm succeeded.

        Raises
        ------
        SwarmFailedError
            If it failed: every failure's task, node and traceback (``.result`` is
            this run).
        ShoalError
            ``swarm.stopped`` if it was stopped.
        """
        if self.status == "failed":
            raise SwarmFailedError(self.plan.name, self.reason, self.failures, self)
        if not self.ok:
            raise ShoalError(
                f"swarm {self.plan.name!r} {self.status}: {self.reason}",
                code=f"swarm.{self.status}",
                hint="see run.failures for tracebacks",
            )

    def story(self, instance_id: str) -> list[str]:
        """What happened to one instance: one line per transition or engine decision.

        Each line reads ``t=<seconds> #<event id> <event>: <detail>``; the instance ids
        of failed instances are in :attr:`failures`.

        Raises
        ------
        ShoalError
            ``engine.unknown_instance`` if this run never scheduled ``instance_id``.
        """
        return self._engine.story(instance_id)

    def logs(
        self,
        node: str | None = None,
        task: str | None = None,
        level: str | None = None,
        iteration: int | None = None,
    ) -> list[LogRecord]:
        """Log records, filtered by node, task (alias), level and iteration."""
        rows = self._store.logs(
            self.swarm_id, node=node, task=task, level=level, iteration=iteration
        )
        return [log_record(r, self.plan) for r in rows]

    def metrics(
        self,
        name: str | None = None,
        node: str | None = None,
        task: str | None = None,
        *,
        frame: bool | None = None,
    ) -> Any:
        """Metric values, filtered by name, node and task (alias).

        Parameters
        ----------
        name, node, task
            Only values of this metric name, node id and task alias.
        frame
            None (default): a pandas DataFrame when pandas is installed, else a list of
            records. True: always a DataFrame (``metrics.pandas`` if pandas is
            missing). False: always the list of :class:`~shoal.MetricRecord`.

        Returns
        -------
        pandas.DataFrame or list of MetricRecord
            The DataFrame is tidy: one row per value, columns ``swarm`` (the swarm's
            name), ``iteration``, ``node``, ``task``, ``name``, ``value``, ``step``,
            ``time``; e.g. ``run.metrics("val_accuracy").groupby("iteration").value.mean()``.
        """
        rows = self._store.metrics(self.swarm_id, name=name, node=node, task=task)
        return frame_or_records([metric_record(r) for r in rows], self.plan.name, frame)

    def plot(self, name: str, ax: Any = None) -> Any:
        """Draw metric ``name`` per iteration with matplotlib: a thin line per node (a
        min-max band above 50 nodes) and the mean over nodes.

        Parameters
        ----------
        name
            The metric, as given to ``self.logger.metric(name, value)``.
        ax
            The matplotlib Axes to draw on (default: a new figure).

        Returns
        -------
        matplotlib.axes.Axes
            The axes (``ax.figure`` is its figure).

        Raises
        ------
        ShoalError
            ``metrics.matplotlib`` without matplotlib (``pip install 'shoal[plot]'``),
            ``metrics.unknown`` if no value of ``name`` was logged.
        """
        return plot_metric(self.metrics(frame=False), name, ax, title=f"{self.plan.name}: {name}")

    def summary(self) -> dict[str, Any]:
        """A JSON-representable summary: status, iterations, globals, metrics."""
        globals_: dict[str, Any] = {}
        for key in self.globals:
            value = self.globals[key]
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue  # arrays and other non-JSON values are in the store, not here
            globals_[key] = value
        return {
            "swarm": self.plan.name,
            "status": self.status,
            "reason": self.reason,
            "iterations": self.iterations,
            "wall_s": round(self.wall_s, 3),
            "globals": globals_,
            "metrics": [
                {
                    "name": m.name,
                    "value": m.value,
                    "step": m.step,
                    "node": m.node_id,
                    "task": m.alias,
                    "iteration": m.iteration,
                }
                for m in self._store.metrics(self.swarm_id)
            ],
            "failures": [
                {
                    "instance": f.instance_id,
                    "task": f.alias,
                    "node": f.node_id,
                    "iteration": f.iteration,
                    "kind": f.kind,
                    "error": f.error,
                    "traceback": f.traceback,
                }
                for f in self.failures
            ],
            "timings": [t.__dict__ for t in self.timings],
            # What `shoal logs RUN --task/--node` checks names against.
            "tasks": [t.alias for t in self.plan.tasks],
            "nodes": [n.node_id for n in self._engine.nodes()],
        }
