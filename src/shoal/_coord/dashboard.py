"""The coordinator's dashboard source (``shoal._ui``): its store and engine views.

Everything is read the way the user routes read it: records from the store, live state
from the engine's views under the driver's lock, never a copy of engine state.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict, deque
from typing import Any

from shoal._api.records import LogRecord, MetricRecord, log_record, metric_record
from shoal._coord.driver import Coordinator
from shoal._coord.state import NodeReport
from shoal._engine import EngineError
from shoal._engine.capacity import Capacity
from shoal._plan import load_plan
from shoal._store.base import NodeRecord
from shoal._ui.source import (
    FailureRow,
    InstanceRow,
    IterationRow,
    NodeInfo,
    SwarmDetail,
    SwarmInfo,
    instance_row,
)

#: Swarms whose failures the overview and node pages look through (newest first).
RECENT_SWARMS = 20
#: Instances of one task in one iteration listed at most (one row per node).
MAX_ROWS_PER_TASK = 2000
_LOG_PAGE = 10_000  # log rows read per store call
_TAILS = 64  # filters whose newest records are remembered

#: NodeRecord fields that are no facts (secrets, liveness shown elsewhere).
_NOT_FACTS = {"node_id", "credential_hash", "last_seen", "connected", "info"}


def node_facts(record: NodeRecord) -> dict[str, str]:
    """What the node page shows of a node's record: every field of the store's
    :class:`~shoal._store.base.NodeRecord` but its credential hash, and every entry of
    its ``info`` (where the agent's facts go: CPUs, memory, GPUs...), so a fact added
    to the record shows without a change here. Dataset *names* only, never data."""
    facts: dict[str, str] = {}
    for f in dataclasses.fields(record):
        if f.name in _NOT_FACTS:
            continue
        value = getattr(record, f.name)
        if f.name == "images" and value is None:
            text = "any (not restricted)"
        elif f.name == "revoked" and value is None:
            continue
        elif isinstance(value, (tuple, list, set, frozenset)):
            text = ", ".join(str(v) for v in value) or "none"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = str(value)
        facts[f.name.replace("_", " ")] = text
    for key, value in sorted((record.info or {}).items()):
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        facts[str(key).replace("_", " ")] = str(value)
    return facts


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def capacity_facts(capacity: Capacity | None) -> dict[str, str]:
    """What a node advertised for one instance (CPUs, memory, GPUs), as the node page
    shows it; nothing when it advertised none (an agent that predates the facts)."""
    if capacity is None:
        return {}
    facts = {}
    if capacity.cpu is not None:
        facts["cpus"] = f"{capacity.cpu:g}"
    if capacity.memory is not None:
        facts["memory"] = _gib(capacity.memory)
    facts["gpus"] = str(capacity.gpu)
    if capacity.gpu_memory is not None:
        facts["gpu memory"] = _gib(capacity.gpu_memory)
    return facts


def _node_info(report: NodeReport) -> NodeInfo:
    view = report.view
    return NodeInfo(
        report.record.node_id,
        bool(view.connected) if view is not None else False,
        report.last_seen or None,
        view.running if view is not None else 0,
        # The advertised capacity lives in the engine's view, not in the store's record.
        node_facts(report.record) | capacity_facts(view.capacity if view is not None else None),
        report.beats,
    )


class CoordinatorSource:
    """A :class:`~shoal._ui.source.Source` over a running coordinator."""

    kind = "coordinator"
    can_stop = True

    def __init__(self, coord: Coordinator) -> None:
        self.coord = coord
        # The newest log records per filter, read on from the last sequence number seen:
        # a live page re-reads only what arrived since (the store pages forward only).
        self._tails: OrderedDict[tuple[Any, ...], tuple[int, deque[LogRecord]]] = OrderedDict()
        self._tails_lock = threading.Lock()

    # ------------------------------------------------------------- changes
    @property
    def closing(self) -> bool:
        """Whether the coordinator shuts down (it then wakes every wait)."""
        return self.coord.closing

    def generation(self) -> int:
        """Swarm changes and log records both count (metrics arrive with logs)."""
        return self.coord.changes.generation * 1_000_003 + self.coord.log_changes.generation

    async def changed(self, seen: int, timeout: float) -> int:
        """Wait on the coordinator's change broadcast (logs arrive with a status change
        or on their own: both are waited on, the first wins)."""
        import asyncio

        if self.generation() != seen:
            return self.generation()
        waits = [
            asyncio.ensure_future(self.coord.changes.wait(self.coord.changes.generation, timeout)),
            asyncio.ensure_future(
                self.coord.log_changes.wait(self.coord.log_changes.generation, timeout)
            ),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self.generation()

    # ------------------------------------------------------------- nodes
    def nodes(self) -> list[NodeInfo]:
        """Every node the store knows."""
        return [_node_info(r) for r in self.coord.nodes()]

    def node_instances(self, node_id: str) -> list[InstanceRow]:
        """The node's live instances, then its instances in the latest iteration of the
        recent swarms."""
        coord = self.coord
        rows: dict[str, InstanceRow] = {}
        with coord._lock:
            for view in coord.engine.active(node_id):
                rows[view.instance_id] = instance_row(
                    view.instance_id, coord.engine.story(view.instance_id), view.state.value
                )
        for s in self.swarms()[:RECENT_SWARMS]:
            detail = self.swarm(s.swarm_id)
            for r in detail.instances if detail is not None else []:
                if r.node_id == node_id:
                    rows.setdefault(r.instance_id, r)
        return sorted(rows.values(), key=lambda r: (r.state != "running", -r.iteration))

    # ------------------------------------------------------------- swarms
    def swarms(self) -> list[SwarmInfo]:
        """Every swarm, newest first; status from the engine where it hosts the swarm."""
        out = []
        for rec in self.coord.store.swarms():
            status, iteration, reason = rec.status, rec.iteration, rec.reason
            with self.coord._lock:
                try:
                    view = self.coord.engine.swarm(rec.swarm_id)
                    status, iteration, reason = view.status, view.iteration, view.reason
                except EngineError:
                    pass
            out.append(SwarmInfo(rec.swarm_id, rec.name, status, iteration, reason, rec.created))
        return out

    def _instances(self, swarm_id: str, iteration: int, aliases: list[str]) -> list[InstanceRow]:
        """Instances of one iteration, found by id (``swarm/iteration/alias/slot/attempt``)
        through the engine's views."""
        engine = self.coord.engine
        found = []
        with self.coord._lock:  # only the lookups hold the driver's lock; parsing does not
            for alias in aliases:
                slot = 0
                while slot < MAX_ROWS_PER_TASK:
                    attempt = 0
                    while (
                        view := engine.find_instance(
                            f"{swarm_id}/{iteration}/{alias}/{slot}/{attempt}"
                        )
                    ) is not None:
                        found.append((view, engine.story(view.instance_id)))
                        attempt += 1
                    if attempt == 0:
                        break
                    slot += 1
        return [
            dataclasses.replace(
                instance_row(view.instance_id, story, view.state.value), node_id=view.node_id
            )
            for view, story in found
        ]

    def swarm(self, swarm_id: str, iteration: int | None = None) -> SwarmDetail | None:
        """One swarm: its record, and the engine's view when it hosts the swarm."""
        rec = self.coord.store.swarm_get(swarm_id)
        if rec is None:
            return None
        report = self.coord.status(swarm_id)
        view = report.view
        if view is None:
            info = SwarmInfo(swarm_id, rec.name, rec.status, rec.iteration, rec.reason, rec.created)
            try:
                plan = load_plan(rec.plan)
            except Exception:  # an unreadable old record: show the rest
                plan = None
            return SwarmDetail(info, plan, [], rec.iteration, [], [])
        info = SwarmInfo(swarm_id, rec.name, view.status, view.iteration, view.reason, rec.created)
        aliases = [t.alias for t in view.plan.tasks]
        timeline = []
        with self.coord._lock:
            for it in range(max(view.iteration + 1 - 60, 0), view.iteration + 1):
                counts = self.coord.engine.counts(swarm_id, it)
                timeline.append(
                    IterationRow(
                        it,
                        sum(c.scheduled for c in counts.values()),
                        sum(c.running for c in counts.values()),
                        sum(c.succeeded for c in counts.values()),
                        sum(c.failed for c in counts.values()),
                        it == view.iteration,
                    )
                )
        shown = view.iteration if iteration is None else iteration
        failures = [
            FailureRow(
                swarm_id,
                f.instance_id,
                f.alias,
                f.node_id,
                f.iteration,
                f.attempt,
                str(getattr(f.kind, "value", f.kind)),
                f.error,
                f.traceback,
            )
            for f in view.failures
        ]
        instances = self._instances(swarm_id, shown, aliases) if shown >= 0 else []
        return SwarmDetail(info, view.plan, timeline, shown, instances, failures)

    def failures(self, limit: int) -> list[FailureRow]:
        """The recent swarms' failures, newest first."""
        rows: list[FailureRow] = []
        for s in self.swarms()[:RECENT_SWARMS]:
            with self.coord._lock:
                try:
                    view = self.coord.engine.swarm(s.swarm_id)
                except EngineError:
                    continue
            rows += [
                FailureRow(
                    s.swarm_id,
                    f.instance_id,
                    f.alias,
                    f.node_id,
                    f.iteration,
                    f.attempt,
                    str(getattr(f.kind, "value", f.kind)),
                    f.error,
                    f.traceback,
                )
                for f in reversed(view.failures)
            ]
            if len(rows) >= limit:
                break
        return rows[:limit]

    # ------------------------------------------------------------- logs, metrics
    def logs(
        self, swarm_id: str, node: str | None, task: str | None, level: str | None, limit: int
    ) -> list[LogRecord]:
        """The last ``limit`` matching records (the store pages by sequence number)."""
        key = (swarm_id, node, task, level, limit)
        with self._tails_lock:
            after, tail = self._tails.pop(key, (0, deque(maxlen=limit)))
        while True:
            rows = self.coord.store.logs(swarm_id, node, task, level, None, after, _LOG_PAGE)
            tail.extend(log_record(r) for r in rows)
            if rows:
                after = rows[-1].seq
            if len(rows) < _LOG_PAGE:
                break
        with self._tails_lock:
            self._tails[key] = (after, tail)
            while len(self._tails) > _TAILS:
                self._tails.popitem(last=False)
        return list(tail)

    def metrics(self, swarm_id: str, name: str | None = None) -> list[MetricRecord]:
        """The swarm's metric values."""
        return [metric_record(r) for r in self.coord.store.metrics(swarm_id, name)]

    def story(self, instance_id: str) -> list[str] | None:
        """The engine's story of an instance."""
        with self.coord._lock:
            if self.coord.engine.find_instance(instance_id) is None:
                return None
            return self.coord.engine.story(instance_id)

    def stop(self, swarm_id: str) -> None:
        """As ``POST /v1/swarms/{id}/stop``."""
        self.coord.stop_swarm(swarm_id)
