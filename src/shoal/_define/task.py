"""``Task``: where and how many instances of a module run, and graph building by calls."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from shoal._define.module import Module
from shoal._errors import Problem, ShoalError


class Condition(str, Enum):
    """When the downstream tasks of a task may start.

    ``FINISHED``: once every instance of this task has ended. ``RESULT``: once this
    task has ``min_results`` successful instances (k-of-n); stragglers keep running and
    their results are kept for the record but are not visible downstream.
    """

    FINISHED = "finished"
    RESULT = "result"


class NetworkDriver(str, Enum):
    """Network drivers a swarm may declare with ``Swarm.add_network`` (seed 002).

    Exported from :mod:`shoal` as ``NetworkDriver`` and, for seed code, as ``Driver``.
    """

    BRIDGE = "bridge"
    OVERLAY = "overlay"
    HOST = "host"


_METHODS = ("all", "any", "random", "fixed", "maximum")


@dataclass
class _GraphBuilder:
    """Collects the edges recorded by task calls during one ``execute()``."""

    order: list[Task] = field(default_factory=list)
    edges: list[tuple[Task, Task]] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)

    def add(self, task: Task) -> None:
        if id(task) not in self._seen:
            self._seen.add(id(task))
            self.order.append(task)


_BUILDER: contextvars.ContextVar[_GraphBuilder | None] = contextvars.ContextVar(
    "shoal_graph_builder", default=None
)


def _flatten(items: Iterable[Any]) -> list[Task]:
    out: list[Task] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(_flatten(item))
        elif isinstance(item, Task):
            out.append(item)
        elif isinstance(item, Module):
            out.append(item.implicit_task())
        else:
            raise ShoalError(
                f"a task was called with {type(item).__name__} {item!r}; tasks are connected "
                "by calling them with other tasks",
                code="graph.argument",
                hint="call t(u), t([u, v]) or t() with Task or Module objects",
            )
    return out


_ORDERS = ("parallel", "chain", "ring")


class Task:
    """A unit of a swarm's graph: a module placed on nodes.

    Parameters
    ----------
    module
        The :class:`shoal.Module` to run.
    method
        ``"all"`` (one instance on every eligible node), ``"any"`` (the least-loaded
        eligible nodes) or ``"random"`` (a seeded random sample). ``"fixed"`` (exactly
        ``specified_ids``) and ``"maximum"`` (``all`` capped at ``maximum``) are accepted
        and normalised.
    maximum
        How many nodes: a count, a fraction of the eligible nodes (``0 < f <= 1``, a
        float, rounded up) or ``-1`` for every eligible node. Default: all for
        ``"all"``, one for ``"any"`` and ``"random"``.
    fixed
        Pin the nodes chosen in the first iteration for every later iteration.
    specified_ids, excepted_ids
        Only these nodes / never these nodes.
    gpu
        Run only on nodes with a GPU.
    network
        A network declared with ``Swarm.add_network``, or a driver's name
        (``"bridge"``, ``"overlay"``, ``"host"``: a network of that name and driver).
        Under the podman/docker executors, the instances of one swarm on one network
        share a container network on a node (internal: no route off it); elsewhere it
        has no effect (said once).
    alias
        The task's name in the graph, in results and logs; defaults to the attribute
        name on the swarm, then the module name.
    condition
        When downstream tasks may start (:class:`Condition`).
    timeout
        Seconds an instance may run before it is killed and counted as failed.
    retries
        How many times a failed instance is run again.
    min_results
        Successful instances needed (default: all scheduled); with
        ``Condition.RESULT`` downstream tasks start as soon as this many succeed.
        For a ring: successes needed in its last round.
    order
        ``"parallel"`` (default: the instances run side by side), ``"chain"`` (one
        instance per chosen node, one after another in a seeded order; each sees only
        the one before, downstream tasks only the last) or ``"ring"`` (``rounds``
        rounds over the same nodes; in round r node i sees node i-1's round r-1).
    rounds
        Rings only: the number of rounds (default: the number of nodes, so that every
        node's value was updated by every node).
    on_demand
        Not started by the graph: a running instance calls
        ``world.invoke(alias, ...)``. Declare it as an attribute of the swarm and do not
        call it in ``execute()``.
    loop
        The name of an inner loop declared with ``Swarm.add_loop(name, times=...)``:
        the task runs in each pass of that loop (docs/engine.md, "Inner loops").
    """

    def __init__(
        self,
        module: Module,
        method: str = "all",
        maximum: int | float | None = None,
        fixed: bool = False,
        specified_ids: Iterable[str] | None = None,
        excepted_ids: Iterable[str] | None = None,
        gpu: bool = False,
        network: str | None = None,
        alias: str | None = None,
        condition: Condition | str = Condition.FINISHED,
        timeout: float | None = None,
        retries: int = 0,
        min_results: int | None = None,
        order: str = "parallel",
        rounds: int | None = None,
        on_demand: bool = False,
        loop: str | None = None,
    ) -> None:
        self.module = module
        self.method = method
        self.maximum = maximum
        self.fixed = fixed
        self.specified_ids = None if specified_ids is None else tuple(specified_ids)
        self.excepted_ids = tuple(excepted_ids or ())
        self.gpu = gpu
        self.network = network
        self.alias = alias
        self.condition = condition
        self.timeout = timeout
        self.retries = retries
        self.min_results = min_results
        self.order = order
        self.rounds = rounds
        self.on_demand = on_demand
        self.loop = loop

    def __repr__(self) -> str:
        return f"Task({self.alias or self.module.name!r}, method={self.method!r})"

    def __call__(self, *upstream: Any) -> Task:
        """Connect ``upstream`` tasks to this one and return it.

        ``t()`` is a source, ``t(u)`` adds the edge u -> t, ``t([u, v])`` fans in.
        """
        builder = _BUILDER.get()
        if builder is None:
            raise ShoalError(
                f"{self!r} was called outside Swarm.execute()",
                code="graph.context",
                hint="connect tasks inside your Swarm's execute() method",
            )
        ups = _flatten(upstream)
        for u in ups:
            builder.add(u)
        builder.add(self)
        for u in ups:
            builder.edges.append((u, self))
        return self

    # ------------------------------------------------------------------ validation
    def problems(self, obj: str, networks: Iterable[str]) -> list[Problem]:
        """Everything wrong with this task's options, each with its fix."""
        out: list[Problem] = []
        if self.method not in _METHODS:
            out.append(
                Problem(
                    "task.method",
                    obj,
                    f"unknown method {self.method!r}",
                    f"use one of {', '.join(repr(m) for m in _METHODS[:3])}",
                )
            )
        out += self._maximum_problems(obj)
        if self.specified_ids is not None and self.excepted_ids:
            both = sorted(set(self.specified_ids) & set(self.excepted_ids))
            if both:
                out.append(
                    Problem(
                        "task.ids",
                        obj,
                        f"nodes {both} are both in specified_ids and excepted_ids",
                        "remove them from one of the two lists",
                    )
                )
        if self.method == "fixed" and not self.specified_ids:
            out.append(
                Problem(
                    "task.ids",
                    obj,
                    'method="fixed" without specified_ids',
                    "list the nodes in specified_ids=[...]",
                )
            )
        if self.network is not None and self.network not in set(networks):
            out.append(
                Problem(
                    "task.network",
                    obj,
                    f"uses unknown network {self.network!r}",
                    f"declare it with self.add_network({self.network!r}, NetworkDriver.BRIDGE) "
                    "in the swarm's __init__, or name a driver ("
                    + ", ".join(repr(d.value) for d in NetworkDriver)
                    + ")",
                )
            )
        try:
            Condition(self.condition)
        except ValueError:
            out.append(
                Problem(
                    "task.condition",
                    obj,
                    f"unknown condition {self.condition!r}",
                    "use Condition.FINISHED or Condition.RESULT",
                )
            )
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float)) and self.timeout > 0
        ):
            out.append(
                Problem(
                    "task.timeout",
                    obj,
                    f"timeout {self.timeout!r} is not > 0",
                    "give a timeout in seconds, or None",
                )
            )
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            out.append(
                Problem(
                    "task.retries",
                    obj,
                    f"retries {self.retries!r} is not an int >= 0",
                    "give retries=0 or more",
                )
            )
        if self.min_results is not None and (
            not isinstance(self.min_results, int) or self.min_results < 1
        ):
            out.append(
                Problem(
                    "task.min_results",
                    obj,
                    f"min_results {self.min_results!r} is not an int >= 1",
                    "give min_results=1 or more, or None for all instances",
                )
            )
        return out + self._order_problems(obj)

    def _order_problems(self, obj: str) -> list[Problem]:
        out: list[Problem] = []
        if self.order not in _ORDERS:
            out.append(
                Problem(
                    "task.order",
                    obj,
                    f"unknown order {self.order!r}",
                    f"use one of {', '.join(repr(o) for o in _ORDERS)}",
                )
            )
        if self.rounds is not None and (
            self.order != "ring"
            or not isinstance(self.rounds, int)
            or isinstance(self.rounds, bool)
            or self.rounds < 1
        ):
            out.append(
                Problem(
                    "task.order",
                    obj,
                    f"rounds={self.rounds!r} needs order='ring' and an int >= 1",
                    "give rounds only with order='ring', or leave it None (one per node)",
                )
            )
        if self.order in ("chain", "ring") and Condition(self.condition) is Condition.RESULT:
            out.append(
                Problem(
                    "task.order",
                    obj,
                    f"order={self.order!r} with condition=RESULT",
                    "a chain's or ring's result is its last instance or round: use FINISHED",
                )
            )
        if self.on_demand is not False and self.on_demand is not True:
            out.append(
                Problem("task.on_demand", obj, f"on_demand={self.on_demand!r}", "give a bool")
            )
        if self.on_demand and self.order != "parallel":
            out.append(
                Problem(
                    "task.on_demand",
                    obj,
                    f"is on-demand and has order={self.order!r}",
                    "an invoked task runs its instances side by side; drop order",
                )
            )
        if self.loop is not None and not isinstance(self.loop, str):
            out.append(
                Problem(
                    "task.loop",
                    obj,
                    f"loop={self.loop!r} is not a loop name",
                    'give the name of a loop declared with Swarm.add_loop("name", times=...)',
                )
            )
        elif self.loop is not None and self.on_demand:
            out.append(
                Problem(
                    "task.loop",
                    obj,
                    f"is on-demand and in loop {self.loop!r}",
                    "an invoked task is run by world.invoke, never by a loop: drop loop=",
                )
            )
        return out

    def _maximum_problems(self, obj: str) -> list[Problem]:
        m = self.maximum
        fix = "use a count >= 1, a fraction 0 < f <= 1 (a float) or -1 for every eligible node"
        if m is None or (m == -1 and not isinstance(m, bool)):
            return []
        if isinstance(m, bool) or not isinstance(m, (int, float)) or math.isnan(m):
            return [Problem("task.maximum", obj, f"maximum {m!r} is not a number", fix)]
        if isinstance(m, int) and m < 1:
            return [Problem("task.maximum", obj, f"maximum={m} selects no node", fix)]
        if isinstance(m, float) and not 0.0 < m <= 1.0:
            return [Problem("task.maximum", obj, f"maximum={m} is not a fraction in (0, 1]", fix)]
        return []
