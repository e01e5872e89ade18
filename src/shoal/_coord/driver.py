"""The coordinator's driver: one engine over real time, HTTP and a store.

Like the simulator's driver it only translates. Node reports, world calls, heartbeats
and timers become engine events; the engine's instructions become node queue entries
and store updates. Every event is appended to the store's event log *before* the engine
sees it, so a restarted coordinator rebuilds the same engine by replaying the log
(instructions produced during replay are not sent again; every instance still live
afterwards is offered again to its node).

The engine is not thread-safe: every engine call holds ``self._lock``. Store calls that
do not touch the engine (world operations, logs) run outside it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from shoal._api.schemas import RunInstruction
from shoal._coord.errors import forbidden, not_found
from shoal._coord.events import decode_event, encode_event
from shoal._coord.node_ops import NodeOps
from shoal._coord.notify import Broadcast, NodeQueues
from shoal._coord.state import Counts, Live, NodeState, Offer
from shoal._coord.world import CoordWorld
from shoal._engine import Engine, EngineError, InstanceState
from shoal._engine.messages import (
    CancelInstance,
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InstanceSucceeded,
    Instruction,
    IterationStarted,
    NextIterScheduled,
    NodeJoined,
    NodeLost,
    NodeRestarted,
    RunInstance,
    StopRequested,
    StopSwarmCalled,
    SwarmFinished,
    SwarmSubmitted,
    TimerFired,
    WakeAt,
)
from shoal._errors import ShoalError
from shoal._plan import Plan
from shoal._store.base import Store, SwarmRecord
from shoal._world.service import InstanceInfo

log = logging.getLogger("shoal.coordinator")

_TERMINAL = (InstanceState.SUCCEEDED, InstanceState.FAILED, InstanceState.CANCELLED)


class Coordinator(NodeOps):
    """Drives one engine for every swarm the coordinator hosts.

    Parameters
    ----------
    store
        Where everything is kept (any :class:`~shoal._store.base.Store`).
    heartbeat_timeout_s
        A node that has not been heard from for this long is lost.
    clock
        Wall-clock seconds; event times are wall time so they survive restarts.
    """

    def __init__(
        self,
        store: Store,
        heartbeat_timeout_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.clock = clock
        self.queues = NodeQueues()
        self.changes = Broadcast()  # swarm status, iteration or task counts changed
        self.log_changes = Broadcast()  # a log record was added
        self.world = CoordWorld(store, self._on_stop, self._on_next_iter, clock)
        self._lock = threading.RLock()
        self._engine = Engine()
        self._replaying = False
        self._live: dict[str, Live] = {}
        self._nodes: dict[str, NodeState] = {}
        self._counts: dict[tuple[str, int, str], Counts] = {}
        self._swarms: dict[str, Plan] = {}
        self._wake: float | None = None
        self._credentials: dict[str, str] = {}  # node id -> credential hash (cache)
        self._ticker: threading.Thread | None = None
        self._tick = threading.Condition(self._lock)
        self._stopping = False
        self._closing = False

    # ------------------------------------------------------------- life cycle
    def recover(self) -> int:
        """Replay the store's event log into the engine; return how many events.

        Afterwards every live instance is queued again for its node, every connected
        node gets one heartbeat timeout to come back, and a swarm recorded without its
        submission event (the coordinator died in between) is marked failed.
        """
        count = 0
        with self._lock:
            self._replaying = True
            try:
                for _, payload in self.store.events():
                    count += 1
                    # A rejected event was rejected when first handled too.
                    with contextlib.suppress(EngineError):
                        self._handle(decode_event(payload))
            finally:
                self._replaying = False
            now = self.clock()
            for node in self._nodes.values():
                node.last_seen = now
            for live in self._live.values():
                self.queues.push_run(live.info.node_id, self._run_item(live))
            for sid in self._swarms:  # the log is the truth; the records may lag it
                view = self._engine.swarm(sid)
                self._record(sid, view.status, view.reason, view.iteration)
        for rec in self.store.swarms():
            if rec.swarm_id not in self._swarms and rec.status == "running":
                self.store.swarm_update(
                    rec.swarm_id,
                    "failed",
                    "the coordinator stopped before the swarm reached its scheduler; "
                    "submit it again",
                    rec.iteration,
                )
        if count:
            log.info("replayed %d events: %d live instances", count, len(self._live))
        return count

    def start(self) -> None:
        """Start the thread that fires engine timers and detects lost nodes."""
        self._stopping = False
        self._ticker = threading.Thread(target=self._run_ticker, name="shoal-ticker", daemon=True)
        self._ticker.start()

    @property
    def closing(self) -> bool:
        """Whether the server is shutting down (long waits should end now)."""
        return self._closing

    def close_waits(self) -> None:
        """End every long-poll and event stream now: the server is shutting down and
        would otherwise wait for them to time out."""
        self._closing = True
        self.queues.wake_all()
        self.changes.notify()
        self.log_changes.notify()

    def stop(self) -> None:
        """Stop the ticker and release every long-poll."""
        with self._lock:
            self._stopping = True
            self._tick.notify_all()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        self.close_waits()

    def _run_ticker(self) -> None:
        check_every = max(0.05, min(1.0, self.heartbeat_timeout_s / 4))
        with self._lock:
            while not self._stopping:
                now = self.clock()
                if self._wake is not None and now >= self._wake:
                    self._wake = None
                    self._safe_feed(TimerFired(now))
                self._check_heartbeats(now)
                delay = check_every
                if self._wake is not None:
                    delay = min(delay, max(0.0, self._wake - self.clock()))
                self._tick.wait(delay)

    def _safe_feed(self, event: Event) -> None:
        try:
            self._feed(event)
        except Exception:  # the ticker must survive anything one event does
            log.exception("handling %s failed", type(event).__name__)

    # ------------------------------------------------------------- the engine
    def _feed(self, event: Event) -> list[Instruction]:
        """Persist an event, hand it to the engine and carry out its instructions."""
        with self._lock:
            self.store.event_append(encode_event(event))
            return self._handle(event)

    def _handle(self, event: Event) -> list[Instruction]:
        try:
            out = self._engine.handle(event)
        except EngineError as e:
            # Rejected events stay in the log: replay rejects them the same way, and
            # event ids keep matching log positions.
            if not self._replaying:
                log.warning("engine rejected %s: %s", type(event).__name__, e.message)
            raise
        self._apply(event, out)
        return out

    def _apply(self, event: Event, instructions: list[Instruction]) -> None:
        ended: list[str] = []
        match event:
            case NodeJoined():
                node = self._node(event.node_id)
                node.offer = Offer(event.datasets, event.gpu, event.images)
                node.joined = True
            case NodeLost() | NodeRestarted():
                if isinstance(event, NodeLost):
                    self._node(event.node_id).joined = False
                # Before the RunInstance of any retry below is recorded on this node.
                lost = [i for i, lv in self._live.items() if lv.info.node_id == event.node_id]
                ended += lost
                if not self._replaying:
                    # The engine sends no cancel to a lost node; a run still queued for
                    # it must not reach the node when (if) it comes back.
                    for iid in lost:
                        self.queues.cancel(event.node_id, iid, f"node lost: {event.reason}")
            case SwarmSubmitted():
                self._swarms[event.swarm_id] = event.plan
            case InstanceStarted():
                live = self._live.get(event.instance_id)
                if live is not None and not live.started:
                    live.started = True
                    self._count(live).running += 1
            case InstanceSucceeded() | InstanceFailed():
                ended.append(event.instance_id)
        for ins in instructions:
            if isinstance(ins, RunInstance):
                live = Live(
                    InstanceInfo(
                        ins.swarm_id,
                        ins.instance_id,
                        ins.node_id,
                        ins.alias,
                        ins.iteration,
                        dict(ins.inputs),
                    ),
                    ins.attempt,
                    ins.module,
                    ins.timeout_s,
                )
                self._live[ins.instance_id] = live
                self._count(live).scheduled += 1
                if not self._replaying:
                    self.queues.push_run(ins.node_id, self._run_item(live))
            elif isinstance(ins, CancelInstance):
                ended.append(ins.instance_id)
                if not self._replaying:
                    self.queues.cancel(ins.node_id, ins.instance_id, ins.reason)
            elif isinstance(ins, WakeAt):
                self._wake = ins.at
                if not self._replaying:
                    self._tick.notify_all()
            elif isinstance(ins, IterationStarted) and not self._replaying:
                self._record(ins.swarm_id, "running", "", ins.iteration)
            elif isinstance(ins, SwarmFinished) and not self._replaying:
                self._record(ins.swarm_id, ins.status, ins.reason, max(ins.iterations - 1, -1))
                log.info("swarm %s %s: %s", ins.swarm_id, ins.status, ins.reason)
        for iid in ended:
            self._end(iid)
        if not self._replaying:
            self.changes.notify()

    def _record(self, swarm_id: str, status: str, reason: str, iteration: int) -> None:
        # The engine has moved on and the rest of its instructions must still be carried
        # out: a failed status write is logged, not raised (the status route reads the
        # engine, and a restart writes every swarm's status again).
        try:
            self.store.swarm_update(swarm_id, status, reason, iteration)
        except Exception:
            log.exception("recording the status of swarm %s failed", swarm_id)

    def _end(self, instance_id: str) -> None:
        live = self._live.get(instance_id)
        if live is None:
            return
        state = self._engine.instance(instance_id).state
        if state not in _TERMINAL:
            return
        del self._live[instance_id]
        counts = self._count(live)
        if live.started:
            counts.running -= 1
        if state is InstanceState.SUCCEEDED:
            counts.succeeded += 1
        elif state is InstanceState.FAILED:
            counts.failed += 1

    def _count(self, live: Live) -> Counts:
        key = (live.info.swarm_id, live.info.iteration, live.info.alias)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        return counts

    def _run_item(self, live: Live) -> RunInstruction:
        """A run instruction; ``global_versions`` is filled in when it is delivered."""
        i = live.info
        plan = self._swarms[i.swarm_id]
        module = plan.modules[live.module]
        return RunInstruction(
            swarm_id=i.swarm_id,
            instance_id=i.instance_id,
            alias=i.alias,
            iteration=i.iteration,
            attempt=live.attempt,
            module=live.module,
            datasets=list(module.datasets),
            image=module.image,
            timeout_s=live.timeout_s,
        )

    # -------------------------------------------------------------- instances
    def _owned(self, node_id: str, instance_id: str) -> Live | None:
        """The live instance if ``node_id`` owns it; None if it ended; else 404/403."""
        live = self._live.get(instance_id)
        if live is not None:
            owner = live.info.node_id
        else:
            try:
                owner = self._engine.instance(instance_id).node_id
            except EngineError:
                raise not_found("instance", instance_id) from None
        if owner != node_id:
            raise forbidden(f"instance {instance_id!r} does not run on node {node_id!r}")
        return live

    def started(self, node_id: str, instance_id: str) -> None:
        """The node began running the instance (a repeat is ignored)."""
        with self._lock:
            live = self._owned(node_id, instance_id)
            if live is not None and not live.started:
                self._feed(InstanceStarted(instance_id, self.clock()))

    def done(
        self, node_id: str, instance_id: str, ok: bool, error: str, tb: str, kind: str
    ) -> None:
        """The instance ended on its node; a repeat (or a report after the engine ended
        it) is acknowledged and ignored."""
        with self._lock:
            if self._owned(node_id, instance_id) is None:
                return
            now = self.clock()
            if ok:
                self._feed(InstanceSucceeded(instance_id, now))
            else:
                self._feed(InstanceFailed(instance_id, now, error, tb, FailureKind(kind)))

    def world_calls(
        self, node_id: str, instance_id: str, calls: list[tuple[str, dict[str, Any]]]
    ) -> Any:
        """Answer world operations of an instance, in order (outside the engine lock);
        return the last one's value. Every call runs; the first error is raised."""
        with self._lock:
            live = self._owned(node_id, instance_id)
        if live is None:
            raise ShoalError(
                f"instance {instance_id} has already ended",
                code="world.ended",
                hint="the swarm or the engine ended this instance; its work is discarded",
            )
        result: Any = None
        error: Exception | None = None
        for op, args in calls:
            try:
                result = self.world.handle(live.info, op, args)
            except Exception as e:
                error = error or e
        if any(op == "log" for op, _ in calls):
            self.log_changes.notify()
        if error is not None:
            raise error
        return result

    def _on_stop(self, info: InstanceInfo) -> None:
        with self._lock:
            if info.instance_id in self._live:
                self._feed(StopSwarmCalled(info.instance_id, self.clock()))

    def _on_next_iter(self, info: InstanceInfo, alias: str, node_ids: tuple[str, ...]) -> None:
        plan = self._swarms[info.swarm_id]
        aliases = [t.alias for t in plan.tasks]
        if alias not in aliases:
            raise ShoalError(
                f"schedule_next_iter names task {alias!r}, which is not in the swarm",
                code="world.alias",
                hint=f"use one of {sorted(aliases)}",
            )
        with self._lock:
            if info.instance_id in self._live:
                self._feed(NextIterScheduled(info.instance_id, self.clock(), alias, node_ids))

    # ----------------------------------------------------------------- swarms
    def submit(self, plan: Plan, seed: int, owner: str = "user") -> str:
        """Record a swarm, write its initial globals and hand it to the engine."""
        import base64

        swarm_id = uuid.uuid4().hex[:16]
        now = self.clock()
        self.store.swarm_create(SwarmRecord(swarm_id, plan.name, plan.to_json(), owner, now))
        for key, b64 in plan.globals.items():
            self.store.global_set(swarm_id, key, {"inline": base64.b64decode(b64)}, iteration=-1)
        self._feed(SwarmSubmitted(swarm_id, plan, now, seed))
        return swarm_id

    def stop_swarm(self, swarm_id: str) -> None:
        """A user stops a swarm (a no-op once it finished)."""
        if self.store.swarm_get(swarm_id) is None:
            raise not_found("swarm", swarm_id)
        with self._lock:
            if swarm_id in self._swarms:
                self._feed(StopRequested(swarm_id, self.clock()))

    def plan_of(self, swarm_id: str) -> Plan | None:
        """The plan of a swarm the engine hosts."""
        return self._swarms.get(swarm_id)

    def status(self, swarm_id: str) -> dict[str, Any]:
        """``GET /v1/swarms/{id}``: status, failures and task counts."""
        rec = self.store.swarm_get(swarm_id)
        if rec is None:
            raise not_found("swarm", swarm_id)
        doc: dict[str, Any] = {
            "swarm_id": rec.swarm_id,
            "name": rec.name,
            "status": rec.status,
            "iteration": rec.iteration,
            "reason": rec.reason,
            "created": rec.created,
            "failures": [],
            "tasks": {},
        }
        with self._lock:
            plan = self._swarms.get(swarm_id)
            if plan is None:
                return doc
            view = self._engine.swarm(swarm_id)
            doc.update(status=view.status, iteration=view.iteration, reason=view.reason)
            doc["failures"] = [
                {
                    "instance_id": f.instance_id,
                    "alias": f.alias,
                    "node_id": f.node_id,
                    "iteration": f.iteration,
                    "attempt": f.attempt,
                    "kind": f.kind.value,
                    "error": f.error,
                    "traceback": f.traceback,
                }
                for f in view.failures
            ]
            for task in plan.tasks:
                c = self._counts.get((swarm_id, view.iteration, task.alias), Counts())
                doc["tasks"][task.alias] = dict(c.__dict__)
        return doc
