"""The driver side of the world API: answers one instance's channel requests.

Drivers (simulator, node agent) register each instance before it runs and route its
requests here; the service reads and writes the store and reports ``stop_swarm`` and
``schedule_next_iter`` to the driver, which turns them into engine events.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shoal._errors import ShoalError
from shoal._privacy.accounting import Charge
from shoal._privacy.ledger import Budget, Ledger
from shoal._runtime import ops
from shoal._runtime.api import REPLY_TAG
from shoal._store.base import LogRow, MetricRow, ResultRow, Store
from shoal._wire import Wire


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


# This machine's facts, read once (10,000 virtual nodes share them).
_HOST: dict[str, int] = {"cpu": os.cpu_count() or 1, "memory": _memory(), "gpu": 0}


@dataclass(frozen=True)
class InstanceInfo:
    """What the service knows about a running instance.

    Attributes
    ----------
    swarm_id, instance_id, node_id, alias, iteration
        Which instance it is.
    invoke
        The ``world.invoke`` call it runs for (None: started by the graph).
    inputs
        Direct upstream alias -> the instance ids whose results it reads by default.
    upstream
        Every task it is downstream of, transitively, in the plan's graph: the tasks
        whose results it may read (see :meth:`WorldService.check_readable`). Empty
        unless the driver fills it in, so a driver that forgets may read less, never more.
    aliases
        Every task of the swarm (where a ``select`` that found nothing looks for its tag,
        to say where it is); empty unless the driver fills it in.
    """

    swarm_id: str
    instance_id: str
    node_id: str
    alias: str
    iteration: int
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    upstream: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()
    invoke: str | None = None


class Invoker(Protocol):
    """The driver's half of ``world.invoke`` (docs/engine.md, "On-demand tasks")."""

    #: How long a caller waits between two polls of an open call, at most (seconds).
    invoke_retry_s: float

    def invoke_call(
        self,
        info: InstanceInfo,
        call_id: str,
        alias: str,
        nodes: tuple[str, ...] | None,
        min_results: int | None,
        timeout: float | None,
    ) -> float:
        """Hand the call to the engine; return how long the caller may wait for it."""
        ...

    def invoke_wait(self, info: InstanceInfo, call_id: str) -> dict[str, Any] | None:
        """The call's end, or None while it is open: ``{"status", "reason",
        "results": {node_id: instance_id}, "failures": [dict]}``."""
        ...


@dataclass
class NodeInfo:
    """A node's datasets and resources as the service exposes them.

    Attributes
    ----------
    resources
        What ``local.get_resources()`` answers: ``cpu``, ``memory`` (bytes), ``gpu``
        (a count) and ``gpu_memory`` (bytes). Without a profile: this machine's.
    advertised
        Whether placement checks ``resources`` (a simulator node profile said them);
        False: the node takes any module's resources, as it takes any image.
    images
        The images it offers (None: every image).
    load
        What ``local.get_performance_metrics()`` and ``local.get_network_quality()``
        answer: ``cpu_usage`` and ``memory_usage`` (0 to 1), ``rtt_s`` and ``loss``.
    """

    node_id: str
    datasets: Mapping[str, Path]
    resources: dict[str, int] = field(default_factory=lambda: dict(_HOST))
    advertised: bool = False
    images: frozenset[str] | None = None
    load: Mapping[str, float] = field(default_factory=dict)
    #: Dataset name -> the privacy budget this node enforces on it (``[privacy]``).
    privacy: Mapping[str, Budget] = field(default_factory=dict)


Handler = Callable[["InstanceInfo", Any], Any]


class WorldService:
    """Answers ``op`` requests of instances against a store.

    One handler per row of :data:`shoal._runtime.ops.TABLE`; construction fails with
    an error naming every operation without a handler (or handled but not declared).
    """

    def __init__(
        self,
        store: Store,
        nodes: Mapping[str, NodeInfo],
        on_stop: Callable[[InstanceInfo], None],
        on_next_iter: Callable[[InstanceInfo, str, tuple[str, ...]], None],
        clock: Callable[[], float] = time.time,
        invoker: Invoker | None = None,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.invoker = invoker
        self._on_stop = on_stop
        self._on_next_iter = on_next_iter
        self._clock = clock
        self._ledgers: dict[str, Ledger] = {}  # per node, made at its first charge
        self._secret_key = secrets.token_bytes(32)  # local.secret's, for this service
        self._ops: dict[str, Handler] = self.handlers()
        self._said: dict[tuple[str, str], None] = {}  # (instance, tag) hints logged
        ops.check_handlers(self._ops, type(self).__name__)

    def handlers(self) -> dict[str, Handler]:
        """``{operation name: handler}``, one per row of the table of operations."""
        return {
            ops.GLOBALS_GET.name: self._globals_get,
            ops.GLOBALS_SET.name: self._globals_set,
            ops.GLOBALS_KEYS.name: self._globals_keys,
            ops.RESULTS_ADD.name: self._results_add,
            ops.RESULTS_LIST.name: self._results_list,
            ops.SWARM_STOP.name: self._stop,
            ops.SWARM_SCHEDULE_NEXT_ITER.name: self._next_iter,
            ops.STATE_GET.name: self._state_get,
            ops.STATE_SET.name: self._state_set,
            ops.LOCAL_DATASET.name: self._dataset,
            ops.LOCAL_RESOURCES.name: self._resources,
            ops.LOCAL_PERFORMANCE.name: self._performance,
            ops.LOCAL_NETWORK.name: self._network,
            ops.LOCAL_PRIVACY.name: self._privacy,
            ops.LOCAL_SECRET.name: self._secret,
            ops.INVOKE_CALL.name: self._invoke_call,
            ops.INVOKE_WAIT.name: self._invoke_wait,
            ops.INVOKE_RESULTS.name: self._invoke_results,
            ops.INVOKE_INPUTS.name: self._invoke_inputs,
            ops.LOG.name: self._log,
            ops.METRIC.name: self._metric,
        }

    def handle(self, info: InstanceInfo, op: str, args: Mapping[str, Any]) -> Any:
        """Run one request; raise ShoalError for anything the task did wrong."""
        fn = self._ops.get(op)
        if fn is None:
            raise ops.unknown(op)
        return fn(info, args)

    def _globals_get(self, info: InstanceInfo, args: ops.GlobalsGetArgs) -> Any:
        found = self.store.global_get(info.swarm_id, args["key"])
        if found is None:
            return None
        version, value = found
        if args.get("have") == version:
            return {"version": version, "same": True}
        return {"version": version, "value": value}

    def _globals_set(self, info: InstanceInfo, args: ops.GlobalsSetArgs) -> None:
        self.store.global_set(info.swarm_id, args["key"], args["value"], info.iteration)

    def _globals_keys(self, info: InstanceInfo, args: ops.NoArgs) -> list[str]:
        return self.store.global_keys(info.swarm_id)

    def _state_get(self, info: InstanceInfo, args: ops.KeyArgs) -> Wire | None:
        return self.store.state_get(info.swarm_id, info.node_id, info.alias, args["key"])

    def _state_set(self, info: InstanceInfo, args: ops.StateSetArgs) -> None:
        self.store.state_set(info.swarm_id, info.node_id, info.alias, args["key"], args["value"])

    def _resources(self, info: InstanceInfo, args: ops.NoArgs) -> dict[str, int]:
        return dict(self.nodes[info.node_id].resources)

    def _performance(self, info: InstanceInfo, args: ops.NoArgs) -> dict[str, float]:
        node = self.nodes[info.node_id]
        total = float(node.resources.get("memory", 0))
        used = float(node.load.get("memory_usage", 0.0))
        return {
            "cpu_usage": float(node.load.get("cpu_usage", 0.0)),
            "memory_usage": used,
            "cpu_count": float(node.resources.get("cpu", 1)),
            "memory_total": total,
            "memory_available": total * (1.0 - used),
        }

    def _network(self, info: InstanceInfo, args: ops.NoArgs) -> dict[str, float]:
        node = self.nodes[info.node_id]
        # A virtual node's link is what its profile says (perfect by default).
        return {
            "rtt_s": float(node.load.get("rtt_s", 0.0)),
            "loss": float(node.load.get("loss", 0.0)),
            "samples": 0,
        }

    def _results_add(self, info: InstanceInfo, args: ops.ResultsAddArgs) -> None:
        tag = args["tag"]
        if not isinstance(tag, str) or not tag:
            raise ShoalError(
                f"result tag {tag!r} is not a non-empty str",
                code="world.tag",
                hint='use a name like "weights"',
            )
        self.store.result_add(
            ResultRow(
                info.swarm_id,
                info.iteration,
                info.alias,
                info.node_id,
                info.instance_id,
                tag,
                args["value"],
            )
        )

    def _results_list(self, info: InstanceInfo, args: ops.ResultsListArgs) -> list[dict[str, Any]]:
        tag, alias, iteration = args["tag"], args.get("alias"), args.get("iteration")
        aliases = [alias] if alias is not None else list(info.inputs)
        it = info.iteration if iteration is None else int(iteration)
        by_inputs = iteration is None and (alias is None or alias in info.inputs)
        if not by_inputs:  # the engine's inputs are readable by construction
            for a in aliases:
                self.check_readable(info, a, it)
        if iteration is not None and self.store.dropped(info.swarm_id, it):
            raise ShoalError(
                f"the results of iteration {iteration} were dropped to bound disk use",
                code="world.results_dropped",
                hint="keep more with simulate(keep_results=K) / --keep-results K",
            )
        if by_inputs:
            ids = sorted(i for a in aliases for i in info.inputs[a])
            rows = self.store.results_of_instances(ids, tag)
            rows.sort(key=lambda r: (r.alias, r.node_id, r.instance_id))
            if not rows and alias is None:
                self._say_where(info, tag)
        else:
            rows = [
                r for a in aliases for r in self.store.results_of_task(info.swarm_id, it, a, tag)
            ]
        return [
            {"alias": r.alias, "node_id": r.node_id, "iteration": r.iteration, "value": r.value}
            for r in rows
        ]

    def _say_where(self, info: InstanceInfo, tag: str) -> None:
        """A default ``select(tag)`` found nothing from the direct upstream tasks: if the
        tag is stored elsewhere in the swarm (or the upstream tasks stored other tags),
        log a warning to the task's logs that says where and how to read it. Once per
        instance and tag; a tag found nowhere, with upstream tasks that stored nothing,
        is a plain empty answer (``{}``)."""
        key = (info.instance_id, tag)
        if key in self._said:
            return
        self._said[key] = None
        if len(self._said) > _SAID_MAX:
            self._said.pop(next(iter(self._said)))
        message = hint_for_missing_tag(self.store, info, tag)
        if message is not None:
            self.store.log_add(
                LogRow(
                    info.swarm_id,
                    info.node_id,
                    info.alias,
                    info.iteration,
                    info.instance_id,
                    "warning",
                    message,
                    self._clock(),
                )
            )

    @staticmethod
    def check_readable(info: InstanceInfo, alias: str, iteration: int) -> None:
        """Refuse unless the instance may read the results of task ``alias`` in
        ``iteration``.

        Results are readable only by the swarm's downstream tasks (DESIGN.md, sections
        3 and 4): an instance reads the results of every task it is downstream of,
        transitively in the plan's graph, in its own iteration or an earlier one, and
        the results of its own task in earlier iterations. Anything else (a sibling or
        downstream task, a task of another branch, a later iteration) is refused. The
        owner reads everything through the user API, which does not come here.

        Raises
        ------
        ShoalError
            ``world.results_forbidden``, naming both tasks and the rule.
        """
        if alias in info.upstream and iteration <= info.iteration:
            return
        if alias == info.alias and iteration < info.iteration:
            return
        readable = ", ".join(repr(a) for a in sorted(info.upstream)) or "none"
        raise ShoalError(
            f"task {info.alias!r} (iteration {info.iteration}) may not read the results of "
            f"task {alias!r} in iteration {iteration}: a task reads only the results of the "
            f"tasks it is downstream of (here: {readable}) in this or an earlier iteration, "
            "and its own results of earlier iterations",
            code="world.results_forbidden",
            hint=f"make {alias!r} an upstream task of {info.alias!r} in execute(), or pass "
            "the value through world.globals",
        )

    def _stop(self, info: InstanceInfo, args: ops.NoArgs) -> None:
        self._on_stop(info)

    def _next_iter(self, info: InstanceInfo, args: ops.NextIterArgs) -> None:
        self._on_next_iter(info, str(args["alias"]), tuple(args["node_ids"]))

    # ------------------------------------------------------------ world.invoke
    def _invoker(self, info: InstanceInfo) -> Invoker:
        if self.invoker is None:
            raise ShoalError(
                f"task {info.alias!r} called world.invoke, which this driver does not run",
                code="invoke.unsupported",
                hint="run the swarm with shoal.simulate / shoal.testing.Federation or on a "
                "coordinator",
            )
        return self.invoker

    def _own_call(self, info: InstanceInfo, call_id: str) -> dict[str, Any]:
        """The end of one of ``info``'s own calls, or an error."""
        if not str(call_id).startswith(f"{info.instance_id}#"):
            raise ShoalError(
                f"call {call_id!r} is not a call of instance {info.instance_id}",
                code="invoke.args",
                hint="an instance waits only for its own world.invoke calls",
            )
        answer = self._invoker(info).invoke_wait(info, call_id)
        if answer is None:
            raise ShoalError(
                f"call {call_id} has not ended", code="invoke.args", hint="wait for it first"
            )
        return answer

    def _invoke_call(self, info: InstanceInfo, args: ops.InvokeCallArgs) -> dict[str, Any]:
        invoker = self._invoker(info)
        call_id = f"{info.instance_id}#{int(args['n'])}"
        # The inputs first: an invoked instance may start before this returns.
        self.store.result_add(
            ResultRow(
                info.swarm_id,
                info.iteration,
                info.alias,
                info.node_id,
                info.instance_id,
                f"invoke:{call_id}",
                args["value"],
            )
        )
        nodes = args.get("nodes")
        least, limit = args.get("min_results"), args.get("timeout")
        bound = invoker.invoke_call(
            info,
            call_id,
            str(args["alias"]),
            None if nodes is None else tuple(str(n) for n in nodes),
            None if least is None else int(least),
            None if limit is None else float(limit),
        )
        return {"call_id": call_id, "bound_s": bound}

    def _invoke_wait(self, info: InstanceInfo, args: ops.CallArgs) -> dict[str, Any]:
        call_id = str(args["call_id"])
        if not call_id.startswith(f"{info.instance_id}#"):
            self._own_call(info, call_id)  # raises
        invoker = self._invoker(info)
        answer = invoker.invoke_wait(info, call_id)
        if answer is None:
            return {"done": False, "retry_s": invoker.invoke_retry_s}
        return {
            "done": True,
            "status": answer["status"],
            "reason": answer["reason"],
            "nodes": sorted(answer["results"]),
            "failures": answer["failures"],
        }

    def _invoke_results(self, info: InstanceInfo, args: ops.CallArgs) -> list[dict[str, Any]]:
        answer = self._own_call(info, str(args["call_id"]))
        ids = sorted(answer["results"].values())
        rows = self.store.results_of_instances(ids, REPLY_TAG)
        rows.sort(key=lambda r: r.node_id)
        return [
            {"alias": r.alias, "node_id": r.node_id, "iteration": r.iteration, "value": r.value}
            for r in rows
        ]

    def _invoke_inputs(self, info: InstanceInfo, args: ops.NoArgs) -> Wire | None:
        if info.invoke is None:
            return None
        caller = info.invoke.rsplit("#", 1)[0]
        rows = self.store.results_of_instances([caller], f"invoke:{info.invoke}")
        return rows[0].value if rows else None

    def _dataset(self, info: InstanceInfo, args: ops.DatasetArgs) -> str:
        name = args["name"]
        datasets = self.nodes[info.node_id].datasets
        if name not in datasets:
            mapped = ", ".join(sorted(datasets)) or "none"
            raise ShoalError(
                f"node {info.node_id!r} has no dataset {name!r} (it maps: {mapped})",
                code="local.dataset",
                hint="add the dataset to the node, or list it in Module(datasets=[...]) so "
                "the task is only placed on nodes that have it",
            )
        return str(datasets[name])

    def _privacy(self, info: InstanceInfo, args: ops.PrivacyArgs) -> dict[str, Any]:
        # The same ledger class as a node agent's, one per virtual node, in memory.
        self._dataset(info, {"name": args["dataset"]})  # a dataset the node has
        ledger = self._ledgers.get(info.node_id)
        if ledger is None:
            node = self.nodes[info.node_id]
            ledger = Ledger(node.privacy, owner=f"node {info.node_id!r}")
            self._ledgers[info.node_id] = ledger
        return ledger.spend(args["dataset"], Charge.from_dict(args["charge"]))

    def _secret(self, info: InstanceInfo, args: ops.SecretArgs) -> bytes:
        # Per virtual node and swarm, as a node agent derives it from its own key.
        message = f"{info.node_id}\x00{info.swarm_id}\x00{args['purpose']}".encode()
        return hmac.new(self._secret_key, message, hashlib.sha256).digest()

    def _log(self, info: InstanceInfo, args: ops.LogArgs) -> None:
        self.store.log_add(
            LogRow(
                info.swarm_id,
                info.node_id,
                info.alias,
                info.iteration,
                info.instance_id,
                str(args["level"]),
                str(args["message"]),
                self._clock(),
                ordinal=args.get("n"),
            )
        )

    def _metric(self, info: InstanceInfo, args: ops.MetricArgs) -> None:
        self.store.metric_add(
            MetricRow(
                info.swarm_id,
                info.node_id,
                info.alias,
                info.iteration,
                info.instance_id,
                str(args["name"]),
                float(args["value"]),
                int(args["step"]),
                self._clock(),
                ordinal=args.get("n"),
            )
        )


#: How many (instance, tag) pairs the service remembers having hinted about.
_SAID_MAX = 10_000
#: How many iterations back (from the instance's own) a missing tag is looked for.
HINT_ITERATIONS = 3


def hint_for_missing_tag(store: Store, info: InstanceInfo, tag: str) -> str | None:
    """Where ``tag`` is, for a default ``select(tag)`` that found nothing, or None.

    Looks in every task of the swarm, in the instance's iteration and the
    :data:`HINT_ITERATIONS` before it (newest first). Returns a message naming each
    place found, as ``select(tag, alias=..., iteration=...)`` when the instance may read
    it and as what to change in the graph when it may not; else, when the direct upstream
    tasks stored other tags, names those (a typo); else None.
    """
    where: list[tuple[str, int]] = []
    first = max(0, info.iteration - HINT_ITERATIONS)
    for it in range(info.iteration, first - 1, -1):
        if store.dropped(info.swarm_id, it):
            continue
        for a in info.aliases:
            if (a, it) == (info.alias, info.iteration):
                continue
            if tag in store.result_tags(info.swarm_id, it, a):
                where.append((a, it))
    upstream = ", ".join(repr(a) for a in info.inputs) or "none"
    head = (
        f"results.select({tag!r}) found nothing from the direct upstream tasks ({upstream}) "
        f"in iteration {info.iteration}"
    )
    if where:
        parts = []
        for a, it in where[:5]:
            readable = (a in info.upstream and it <= info.iteration) or (
                a == info.alias and it < info.iteration
            )
            if readable:
                parts.append(
                    f"task {a!r} stored it in iteration {it}: read it with "
                    f"world.results.select({tag!r}, alias={a!r}, iteration={it})"
                )
            else:
                parts.append(
                    f"task {a!r} stored it in iteration {it}, but {info.alias!r} may not read "
                    f"it: make {a!r} an upstream task of {info.alias!r} in execute(), or pass "
                    "the value through world.globals"
                )
        more = f" (and {len(where) - 5} more places)" if len(where) > 5 else ""
        return f"{head}; " + "; ".join(parts) + more
    stored = sorted(
        {t for a in info.inputs for t in store.result_tags(info.swarm_id, info.iteration, a)}
    )
    if stored:
        return f"{head}; they stored only {', '.join(repr(t) for t in stored)} (a misspelt tag?)"
    return None
