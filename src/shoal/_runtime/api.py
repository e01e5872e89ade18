"""The world / local / logger APIs task code uses (seed 001), over a Channel."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal._codec import decode
from shoal._errors import InvokeError, ShoalError
from shoal._runtime import ops
from shoal._runtime.context import InstanceContext
from shoal._wire import Buffer, SegmentReader, from_wire, to_wire, wire_buffer

_MISSING: Any = object()

#: The result tag of an invoked instance's :meth:`World.reply`.
REPLY_TAG = "invoke.reply"


class Globals:
    """``world.globals``: swarm-wide values, read and written by key.

    Writes are atomic per key and visible to every instance that starts after them;
    a per-iteration history is kept by the driver.
    """

    def __init__(self, ctx: InstanceContext) -> None:
        self._ctx = ctx
        self._cache: dict[str, tuple[str, Buffer]] = _CACHE.setdefault(ctx.swarm_id, {})

    def _fetch(self, key: str) -> Any:
        have = self._cache.get(key)
        known = self._ctx.global_versions
        if have is not None and known is not None and known.get(key) == have[0]:
            return decode(have[1])  # unchanged since the instance started: no request
        reply = ops.GLOBALS_GET.send(
            self._ctx.channel, {"key": key, "have": have[0] if have else None}
        )
        if reply is None:
            return _MISSING
        if have is not None and reply.get("same"):
            buf = have[1]
        else:
            buf = wire_buffer(reply["value"])
            self._cache[key] = (reply["version"], buf)
        # Decode on every read: arrays are zero-copy read-only views, and no instance can
        # mutate a list or dict that the next instance in this worker would then see.
        return decode(buf)

    def __getitem__(self, key: str) -> Any:
        value = self._fetch(key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """Return the global ``key``, or ``default`` if it was never set."""
        value = self._fetch(key)
        return default if value is _MISSING else value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise ShoalError(
                f"global key {key!r} is not a str", code="world.key", hint="use string keys"
            )
        ops.GLOBALS_SET.send(
            self._ctx.channel,
            {"key": key, "value": to_wire(value, self._ctx.channel.outbox, "g")},
        )
        self._cache.pop(key, None)
        if self._ctx.global_versions is not None:
            self._ctx.global_versions.pop(key, None)  # read our own write back from the node

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._fetch(key) is not _MISSING

    def keys(self) -> list[str]:
        """Every key set so far."""
        keys: list[str] = ops.GLOBALS_KEYS.send(self._ctx.channel, {})
        return keys


# Encoded globals cached per swarm inside one worker process, keyed by version: an
# unchanged 400 KB model is not moved again for every instance the worker runs.
_CACHE: dict[str, dict[str, tuple[str, Buffer]]] = {}


@dataclass(frozen=True)
class ResultRecord:
    """One stored result, as returned by ``world.results.select_all``."""

    alias: str
    node_id: str
    iteration: int
    value: Any


class Results:
    """``world.results``: values tasks publish for their downstream tasks."""

    def __init__(self, ctx: InstanceContext) -> None:
        self._ctx = ctx

    def add(self, tag: str, value: Any) -> None:
        """Store ``value`` under (iteration, alias, node, ``tag``)."""
        if not isinstance(tag, str) or not tag:
            raise ShoalError(
                f"result tag {tag!r} is not a non-empty str",
                code="world.tag",
                hint='use a name like "weights"',
            )
        wire = to_wire(value, self._ctx.channel.outbox, f"r{self._ctx.iteration}")
        # One-way: the node stores it before it sees this instance end, and reports a
        # failure to store as the instance's failure.
        ops.RESULTS_ADD.send(self._ctx.channel, {"tag": tag, "value": wire})

    def _list(self, tag: str, alias: str | None, iteration: int | None) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = ops.RESULTS_LIST.send(
            self._ctx.channel, {"tag": tag, "alias": alias, "iteration": iteration}
        )
        return records

    def select(
        self, tag: str, alias: str | None = None, iteration: int | None = None
    ) -> dict[str, Any]:
        """Return ``{node_id: value}`` for ``tag``.

        By default from the direct upstream tasks of the current iteration (only the
        instances that had succeeded when this one started).

        Raises
        ------
        ShoalError
            If two results come from one node (two upstream tasks ran there): pass
            ``alias=`` or use :meth:`select_all`.
        """
        records = self._list(tag, alias, iteration)
        owner: dict[str, str] = {}
        for r in records:
            node = r["node_id"]
            if node in owner:
                raise ShoalError(
                    f"results.select({tag!r}) found two results from node {node!r} "
                    f"(tasks {owner[node]!r} and {r['alias']!r})",
                    code="world.select_collision",
                    hint="pass alias= to choose the task, or use "
                    "world.results.select_all(tag) which returns every record",
                )
            owner[node] = r["alias"]
        with SegmentReader() as reader:
            return {r["node_id"]: reader.value(r["value"]) for r in records}

    def stream(
        self, tag: str, alias: str | None = None, iteration: int | None = None
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``(node_id, value)`` one at a time, without holding all in memory."""
        records = self._list(tag, alias, iteration)
        with SegmentReader() as reader:
            values = reader.values([r["value"] for r in records])
            for r, value in zip(records, values, strict=True):
                yield r["node_id"], value

    def select_all(
        self, tag: str, alias: str | None = None, iteration: int | None = None
    ) -> list[ResultRecord]:
        """Every record for ``tag`` with its alias, node and iteration."""
        with SegmentReader() as reader:
            return [
                ResultRecord(r["alias"], r["node_id"], r["iteration"], reader.value(r["value"]))
                for r in self._list(tag, alias, iteration)
            ]


class World:
    """``self.world``: what a task shares with the rest of the swarm."""

    def __init__(self, ctx: InstanceContext) -> None:
        self._ctx = ctx
        self.globals = Globals(ctx)
        self.results = Results(ctx)

    @property
    def iteration(self) -> int:
        """The current iteration, from 0."""
        return self._ctx.iteration

    @property
    def node_id(self) -> str:
        """The node this instance runs on."""
        return self._ctx.node_id

    @property
    def swarm_id(self) -> str:
        """The swarm this instance belongs to."""
        return self._ctx.swarm_id

    @property
    def alias(self) -> str:
        """The alias of this instance's task."""
        return self._ctx.alias

    def stop_swarm(self) -> None:
        """End the swarm once the current iteration has finished."""
        ops.SWARM_STOP.send(self._ctx.channel, {})

    def schedule_next_iter(self, node_ids: Iterable[str], alias: str) -> None:
        """Run task ``alias`` only on ``node_ids`` (those still eligible) next iteration."""
        ids = [str(n) for n in node_ids]
        ops.SWARM_SCHEDULE_NEXT_ITER.send(self._ctx.channel, {"node_ids": ids, "alias": alias})

    def invoke(
        self,
        alias: str,
        nodes: Iterable[str] | None = None,
        inputs: Any = None,
        min_results: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run the on-demand task ``alias`` now and wait for its instances' replies.

        The engine places, retries and times out the instances like any other; this
        instance waits (its own timeout does not run meanwhile). Each invoked instance
        reads ``inputs`` as :attr:`inputs` and answers with :meth:`reply`.

        Parameters
        ----------
        alias
            A task of the swarm declared ``Task(..., on_demand=True)``.
        nodes
            Run exactly on these nodes (default: the task's own placement).
        inputs
            Any codec value (e.g. a model) every invoked instance reads.
        min_results
            Replies needed (default: every placed instance). Once that many cannot
            succeed any more, the call fails at once; after ``timeout`` it succeeds with
            the replies it has if they are enough.
        timeout
            Seconds the call may take (default: the task's timeout times its
            ``retries + 1`` plus the plan's placement timeout).

        Returns
        -------
        dict
            ``{node_id: value}`` of every instance that succeeded (``None`` for one that
            did not reply).

        Raises
        ------
        InvokeError
            ``invoke.failed``: too few instances succeeded; names the task, the nodes
            and every failure (node, kind, error) in ``failures``.
        ShoalError
            ``invoke.timeout`` if no answer came within the call's bound (a driver
            fault: the engine always ends a call).
        """
        if not isinstance(alias, str) or not alias:
            raise ShoalError(
                f"world.invoke alias {alias!r} is not a non-empty str",
                code="invoke.args",
                hint="pass the alias of a task declared Task(..., on_demand=True)",
            )
        if timeout is not None and not timeout > 0:
            raise ShoalError(
                f"world.invoke({alias!r}) timeout={timeout!r} must be > 0",
                code="invoke.args",
                hint="pass seconds, or None for the task's own timeout",
            )
        if min_results is not None and min_results < 0:
            raise ShoalError(
                f"world.invoke({alias!r}) min_results={min_results!r} must be >= 0",
                code="invoke.args",
                hint="pass None to need every placed instance",
            )
        ids = None if nodes is None else [str(n) for n in nodes]
        ctx = self._ctx
        n = ctx.calls[0]
        ctx.calls[0] += 1
        where = "its placement" if ids is None else f"nodes {ids}"
        started = ops.INVOKE_CALL.send(
            ctx.channel,
            {
                "n": n,
                "alias": alias,
                "nodes": ids,
                "min_results": min_results,
                "timeout": None if timeout is None else float(timeout),
                "value": to_wire(inputs, ctx.channel.outbox, f"i{ctx.iteration}"),
            },
        )
        call_id, bound = str(started["call_id"]), float(started["bound_s"])
        # The engine always ends a call by its deadline; this bound only catches a
        # driver that lost the answer.
        deadline = time.monotonic() + bound
        pause = 0.001
        while True:
            answer = ops.INVOKE_WAIT.send(ctx.channel, {"call_id": call_id})
            if answer.get("done"):
                break
            if time.monotonic() > deadline:
                raise ShoalError(
                    f"world.invoke({alias!r}) on {where} got no answer within {bound:g}s "
                    f"(call {call_id})",
                    code="invoke.timeout",
                    hint="the engine ends every call by its timeout: this is a driver fault; "
                    "see the coordinator's or simulator's log",
                )
            time.sleep(pause)
            pause = min(pause * 2, float(answer.get("retry_s", 0.05)))
        if answer.get("status") != "succeeded":
            failures: list[dict[str, Any]] = list(answer.get("failures") or [])
            listed = "; ".join(
                f"node {f['node_id']} ({f['kind']}, attempt {f['attempt']}): {f['error']}"
                for f in failures
            )
            raise InvokeError(
                f"world.invoke({alias!r}) on {where} failed: {answer.get('reason', '')}"
                + (f"; failures: {listed}" if listed else ""),
                alias=alias,
                failures=failures,
                hint="lower min_results to go on without some nodes, raise the task's "
                "retries or timeout, or catch InvokeError",
            )
        records: list[dict[str, Any]] = ops.INVOKE_RESULTS.send(ctx.channel, {"call_id": call_id})
        replied = set(answer.get("nodes") or [])
        with SegmentReader() as reader:
            values = {r["node_id"]: reader.value(r["value"]) for r in records}
        return {node: values.get(node) for node in sorted(replied | set(values))}

    @property
    def inputs(self) -> Any:
        """In an instance run by ``world.invoke``: the caller's ``inputs`` (else None)."""
        wire = ops.INVOKE_INPUTS.send(self._ctx.channel, {})
        return None if wire is None else from_wire(wire)

    def reply(self, value: Any) -> None:
        """In an instance run by ``world.invoke``: the value its caller gets for this
        node (stored as the result tagged ``"invoke.reply"``; a later reply replaces it)."""
        self.results.add(REPLY_TAG, value)


@dataclass(frozen=True)
class Resources:
    """What a node offers, by attribute or by key (``res.cpu`` or ``res["cpu"]``)."""

    cpu: int
    memory: int
    gpu: int
    gpu_memory: int = 0

    @property
    def gpu_available(self) -> bool:
        """Whether the node has a GPU."""
        return self.gpu > 0

    @property
    def cpu_memory(self) -> int:
        """Memory in bytes (the seed's name)."""
        return self.memory

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class Local:
    """``self.local``: the node's own data, state and resources."""

    def __init__(self, ctx: InstanceContext) -> None:
        self._ctx = ctx

    def get_dataset_path(self, name: str) -> Path:
        """The path the node maps dataset ``name`` to."""
        reply = ops.LOCAL_DATASET.send(self._ctx.channel, {"name": name})
        return Path(reply)

    def get_dataset(self, name: str) -> Any:
        """Load dataset ``name``.

        ``.npy``: an array (memory-mapped, read-only); ``.npz``: a dict of arrays;
        ``.csv`` / ``.parquet``: a pandas DataFrame; a folder or any other file: its
        path (read-only).
        """
        return load_dataset(self.get_dataset_path(name))

    def get_state(self, key: str, default: Any = None) -> Any:
        """Value saved by :meth:`set_state` on this node for this swarm and task."""
        reply = ops.STATE_GET.send(self._ctx.channel, {"key": key})
        return default if reply is None else from_wire(reply)

    def set_state(self, key: str, value: Any) -> None:
        """Persist ``value`` for later iterations of this task on this node."""
        ops.STATE_SET.send(
            self._ctx.channel,
            {"key": key, "value": to_wire(value, self._ctx.channel.outbox, "g")},
        )

    def get_resources(self) -> Resources:
        """CPU count, memory and GPU facts of the node."""
        return Resources(**ops.LOCAL_RESOURCES.send(self._ctx.channel, {}))

    def secret(self, purpose: str) -> bytes:
        """A 32-byte secret of this node for this swarm and ``purpose``.

        Every task of the swarm on this node gets the same bytes for the same purpose;
        the node derives them from a key it never sends anywhere, so neither the
        coordinator nor another node can learn them (secure aggregation derives its
        private keys from it).
        """
        answer: bytes = ops.LOCAL_SECRET.send(self._ctx.channel, {"purpose": purpose})
        return answer

    def spend_privacy(self, dataset: str, charge: Mapping[str, Any]) -> dict[str, Any]:
        """Spend from dataset ``dataset``'s privacy budget on this node, or fail.

        Build ``charge`` with :mod:`shoal.privacy` (``Gaussian(...).charge()``); the
        node computes the epsilon spent with its accountant.

        Returns
        -------
        dict
            ``{"dataset", "budget_epsilon", "delta", "spent", "remaining"}``
            (``budget_epsilon`` None: the node sets no budget for it).

        Raises
        ------
        ShoalError
            ``privacy.budget`` when the node refuses: the charge would exceed the
            budget its owner set (the message gives the spent and remaining epsilon).
        """
        answer: dict[str, Any] = ops.LOCAL_PRIVACY.send(
            self._ctx.channel, {"dataset": dataset, "charge": dict(charge)}
        )
        return answer

    def get_performance_metrics(self) -> dict[str, float]:
        """The node's load now (seed 001's adaptive module).

        Returns
        -------
        dict[str, float]
            ``cpu_usage`` (0 to 1: the 1-minute load average per CPU, capped at 1),
            ``memory_usage`` (0 to 1: the share of memory in use), ``cpu_count``,
            ``memory_total`` and ``memory_available`` (bytes). In the simulator, the
            node profile's values.
        """
        reply = ops.LOCAL_PERFORMANCE.send(self._ctx.channel, {})
        return {str(k): float(v) for k, v in reply.items()}

    def get_network_quality(self) -> NetworkQuality:
        """The quality of the node's link to the coordinator, from 0 (none) to 1.

        A number (seed 001 compares it: ``if network_quality < 0.5``) that also carries
        what it is made of: ``rtt_s`` (the median round-trip time of the node's recent
        heartbeats), ``loss`` (the share of recent heartbeats that got no answer) and
        ``samples``. The score is ``(1 - loss) * 0.1 / (0.1 + rtt_s)``: 1 for a perfect
        link, 0.5 at 100 ms or at half the heartbeats lost. In the simulator, from the
        node profile (``rtt_ms``, ``loss``).
        """
        reply = ops.LOCAL_NETWORK.send(self._ctx.channel, {})
        return NetworkQuality.of(float(reply["rtt_s"]), float(reply["loss"]), int(reply["samples"]))


class NetworkQuality(float):
    """A link quality score in [0, 1] with the round-trip time and loss behind it."""

    rtt_s: float
    loss: float
    samples: int

    @classmethod
    def of(cls, rtt_s: float, loss: float, samples: int) -> NetworkQuality:
        """The score of a link with ``rtt_s`` seconds of round trip and ``loss``."""
        rtt_s, loss = max(0.0, rtt_s), min(1.0, max(0.0, loss))
        q = cls((1.0 - loss) * 0.1 / (0.1 + rtt_s))
        q.rtt_s, q.loss, q.samples = rtt_s, loss, samples
        return q

    def __repr__(self) -> str:
        return (
            f"NetworkQuality({float(self):.3f}, rtt_s={self.rtt_s:.4f}, loss={self.loss:.3f}, "
            f"samples={self.samples})"
        )


def load_dataset(path: Path) -> Any:
    """Load a dataset file by its suffix (see :meth:`Local.get_dataset`)."""
    import numpy as np

    suffix = path.suffix.lower()
    if path.is_dir():
        return path
    if suffix == ".npy":
        return np.load(path, mmap_mode="r")
    if suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path)
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path)
    return path


_LEVELS = ("debug", "info", "warning", "error")


class Logger:
    """``self.logger``: log records and numeric metrics, kept per swarm, node, task and
    iteration and queryable after the run."""

    def __init__(self, ctx: InstanceContext) -> None:
        self._ctx = ctx

    def log(self, level: str, message: object) -> None:
        """Log ``message`` at ``level`` (debug, info, warning, error)."""
        if level not in _LEVELS:
            raise ShoalError(
                f"unknown log level {level!r}",
                code="logger.level",
                hint=f"use one of {', '.join(_LEVELS)}",
            )
        ops.LOG.send(self._ctx.channel, {"level": level, "message": str(message)})

    def debug(self, message: object) -> None:
        """Log at debug level."""
        self.log("debug", message)

    def info(self, message: object) -> None:
        """Log at info level."""
        self.log("info", message)

    def warning(self, message: object) -> None:
        """Log at warning level."""
        self.log("warning", message)

    def error(self, message: object) -> None:
        """Log at error level."""
        self.log("error", message)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record a numeric metric (``step`` defaults to the iteration)."""
        ops.METRIC.send(
            self._ctx.channel,
            {
                "name": name,
                "value": float(value),
                "step": self._ctx.iteration if step is None else step,
            },
        )

    def metrics(self, values: Mapping[str, float]) -> None:
        """Record several metrics at once."""
        for k, v in values.items():
            self.metric(k, v)
