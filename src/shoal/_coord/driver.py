"""The coordinator's driver: one engine over real time, HTTP and a store.

Like the simulator's driver it only translates. Node reports, world calls, heartbeats
and timers become engine events; the engine's instructions become node queue entries
and store updates. Every event is appended to the store's event log *before* the engine
sees it, so a restarted coordinator rebuilds the same engine by replaying the log
(instructions produced during replay are not sent again; every instance still live
afterwards is offered again to its node).

The engine is not thread-safe: every engine call holds ``self._lock``. Store calls that
do not touch the engine (world operations, logs) run outside it. The driver keeps no
copy of engine state: which instances are live, on which node, and the task counts all
come from the engine's views.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from shoal._api.records import RUNNING_SHOWN
from shoal._api.schemas import RunInstruction
from shoal._coord.access import BlobAccess
from shoal._coord.errors import forbidden, not_found
from shoal._coord.events import decode_event, encode_event
from shoal._coord.node_ops import NodeOps
from shoal._coord.notify import Broadcast, NodeQueues
from shoal._coord.state import NodeState, SwarmReport
from shoal._coord.storage import storage_full
from shoal._coord.world import CoordWorld
from shoal._driver import DriverBase
from shoal._engine import Engine, EngineError, InstanceState, InstanceView
from shoal._engine.messages import (
    CancelInstance,
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    Instruction,
    InvokeCalled,
    IterationStarted,
    NextIterScheduled,
    NodeLost,
    NodeRestarted,
    RunInstance,
    StopRequested,
    StopSwarmCalled,
    SwarmFinished,
    TimerFired,
    WakeAt,
)
from shoal._errors import ShoalError
from shoal._plan import Plan
from shoal._plan.resources import NO_NEED, parse_resources
from shoal._runtime import ops
from shoal._runtime.loader import user_paths
from shoal._store.base import Store, SwarmRecord
from shoal._store.lease import Lease, LeaseLost

log = logging.getLogger("shoal.coordinator")

#: The event loop slept this much longer than it asked: it was blocked and read no
#: request meanwhile, so no node's silence counts over that time.
LOOP_STALL_S = 1.0
#: The ticker logs a warning when it waited this long for the engine lock.
LOCK_WAIT_WARN_S = 1.0


class Coordinator(NodeOps, DriverBase):
    """Drives one engine for every swarm the coordinator hosts.

    Parameters
    ----------
    store
        Where everything is kept (any :class:`~shoal._store.base.Store`).
    heartbeat_timeout_s
        A node that has not been heard from for this long is lost.
    clock
        Wall-clock seconds; event times are wall time so they survive restarts.
    validate
        Check every engine invariant after each event (tests).
    swarm_quota_bytes
        The most bytes of values one swarm may store (None: no bound).
    lease
        The PostgreSQL lease of a coordinator that may fail over (``shoal._coord.
        failover``): the coordinator starts as a standby, and appends its events on
        the lease's connection once active. None: the only coordinator of its store.
    """

    #: A caller's polls of an open world.invoke call cross the network: not too often.
    invoke_retry_s = 0.25

    def __init__(
        self,
        store: Store,
        heartbeat_timeout_s: float = 15.0,
        clock: Callable[[], float] = time.time,
        validate: bool = False,
        swarm_quota_bytes: int | None = None,
        lease: Lease | None = None,
    ) -> None:
        DriverBase.__init__(self, Engine(), store, validate=validate)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.clock = clock
        self.queues = NodeQueues()
        self.changes = Broadcast()  # swarm status, iteration or task counts changed
        self.log_changes = Broadcast()  # a log record was added
        self.access = BlobAccess(store, self.runs_bundle, swarm_quota_bytes)
        self.world = CoordWorld(
            store, self.world_stop, self.world_next_iter, clock, self.access, invoker=self
        )
        self._lock = threading.RLock()
        self._replaying = False
        self._nodes: dict[str, NodeState] = {}
        self._wake: float | None = None
        self._credentials: dict[str, str] = {}  # node id -> credential hash (cache)
        self._ticker: threading.Thread | None = None
        self._tick = threading.Condition()  # its own lock: the ticker sleeps on it
        self._stopping = False
        self._closing = False
        self._loop_seen: float | None = None  # when the event loop last woke on time
        self.lease = lease
        #: "active" drives the engine; a "standby" follows the log and serves reads;
        #: "fenced" lost its lease and serves nothing (it is stopping).
        self.role = "active" if lease is None else "standby"
        #: Where the active coordinator serves, as its lease says (standbys only).
        self.active_url: str | None = None
        self._seq = 0  # the last event of the log this engine has seen

    def now(self) -> float:
        """Wall-clock seconds (events carry wall time, so they survive restarts)."""
        return self.clock()

    # ------------------------------------------------------------- life cycle
    def recover(self) -> int:
        """Replay the store's event log into the engine; return how many events.

        Afterwards every live instance is queued again for its node, every connected
        node gets one heartbeat timeout to come back, and a swarm recorded without its
        submission event (the coordinator died in between) is marked failed.
        """
        with self._lock:
            count = self._catch_up()
            self._resume(count)
        return count

    def follow(self) -> int:
        """A standby reads the events the active coordinator appended since it last
        looked into its engine (so that its reads are current); return how many."""
        with self._lock:
            count = self._catch_up()
        if count:
            self.changes.notify()
        self.log_changes.notify()  # the active one writes logs; a standby cannot tell when
        return count

    def take_over(self) -> int:
        """This standby now holds the lease: read the rest of the log, then carry on as
        a restarted coordinator does (:meth:`recover`); return the events read now."""
        with self._lock:
            count = self._catch_up()
            # The old active numbered its nodes' instructions from its start time; go
            # on past any number it handed out (they acknowledge with the highest).
            self.queues.renumber()
            self._credentials.clear()  # rotations went through the old active
            self._resume(count)
            self.role = "active"
            self.active_url = None
        self.changes.notify()
        return count

    def fence(self) -> None:
        """The lease was lost: stop driving (every request is refused from now on)."""
        self.role = "fenced"
        self.close_waits()

    def _catch_up(self) -> int:
        """Replay the events after :attr:`_seq` (under the lock); return how many."""
        count = 0
        self._replaying = True
        try:
            for seq, payload in self.store.events(self._seq):
                count += 1
                self._seq = seq
                # A rejected event was rejected when first handled too.
                with contextlib.suppress(EngineError):
                    self.replay(decode_event(payload))
        finally:
            self._replaying = False
        return count

    def _resume(self, count: int) -> None:
        """After a replay, as the active coordinator (under the lock): offer live
        instances again, give nodes a heartbeat timeout, fix swarm records."""
        now = self.clock()
        for node in self.engine.nodes():
            self._node(node.node_id).last_seen = now
        live = self.engine.active()
        for inst in live:
            self.queues.push_run(inst.node_id, self._run_item(inst))
        hosted = set(self.engine.swarm_ids())
        for sid in hosted:  # the log is the truth; the records may lag it
            view = self.engine.swarm(sid)
            self._record(sid, view.status, view.reason, view.iteration)
        for rec in self.store.swarms():
            if rec.swarm_id not in hosted and rec.status == "running":
                self.store.swarm_update(
                    rec.swarm_id,
                    "failed",
                    "the coordinator stopped before the swarm reached its scheduler; "
                    "submit it again",
                    rec.iteration,
                )
        if count:
            log.info("replayed %d events: %d live instances", count, len(live))

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
        with self._tick:
            self._stopping = True
            self._tick.notify_all()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        self.close_waits()

    def tick(self) -> float | None:
        """Fire a due engine timer and lose nodes whose heartbeats stopped; return when
        the next engine timer is due (None: none is). The ticker thread calls this;
        tests on a virtual clock call it directly.

        It takes the engine lock only when there is something to do (a timer is due or
        a node looks late), so liveness checks do not queue behind the swarms' work;
        when it did wait for the lock for long, it says so in the log.
        """
        now = self.clock()
        wake = self._wake
        due = wake is not None and now >= wake
        if not due and not self._late(now):
            return self._wake
        asked = time.monotonic()
        with self._lock:
            waited = time.monotonic() - asked
            if waited > LOCK_WAIT_WARN_S:
                log.warning("the ticker waited %.1f s for the engine lock", waited)
            now = self.clock()
            if self._wake is not None and now >= self._wake:
                self._wake = None
                self._safe_feed(TimerFired(now))
            self._check_heartbeats(now)
            return self._wake

    def _run_ticker(self) -> None:
        check_every = max(0.05, min(1.0, self.heartbeat_timeout_s / 4))
        while True:
            with self._tick:
                if self._stopping:
                    return
                wake = self._wake
                delay = check_every
                if wake is not None:
                    delay = min(delay, max(0.0, wake - self.clock()))
                if delay > 0:
                    self._tick.wait(delay)
                if self._stopping:
                    return
            self.tick()

    # ------------------------------------------------------------ event loop
    def loop_woke(self, late_s: float) -> None:
        """The app's event loop woke ``late_s`` seconds later than it asked to (called
        on the loop, by the app's watchdog, a few times a second).

        A loop that was blocked read no request meanwhile: the nodes' requests waited
        in their sockets. Every node gets that time back, so that loss means silence
        of the node, never deafness of the coordinator; while the loop is blocked,
        nobody is lost (:meth:`_deaf`).
        """
        now = self.clock()
        if late_s > LOOP_STALL_S:
            for node in list(self._nodes.values()):
                node.last_seen = min(now, node.last_seen + late_s)
            log.warning(
                "the event loop was blocked for %.1f s: no node's silence counts over it",
                late_s,
            )
        self._loop_seen = now

    def _deaf(self, now: float) -> bool:
        """Whether the event loop has not woken for :data:`LOOP_STALL_S` (it reads no
        request now); always False without the app's watchdog (tests)."""
        return self._loop_seen is not None and now - self._loop_seen > LOOP_STALL_S

    def _safe_feed(self, event: Event) -> None:
        try:
            self.feed(event)
        except Exception:  # the ticker must survive anything one event does
            log.exception("handling %s failed", type(event).__name__)

    # ------------------------------------------------------------- the engine
    def feed(self, *events: Event) -> list[Instruction]:
        """Persist events (in one transaction), hand each to the engine and carry out
        their instructions."""
        with self._lock:
            try:
                return super().feed(*events)
            except EngineError as e:
                names = ", ".join(type(event).__name__ for event in events)
                log.warning("engine rejected one of %s: %s", names, e.message)
                raise

    def _persist(self, *events: Event) -> None:
        payloads = [encode_event(event) for event in events]
        if self.lease is None:
            self._seq = self.store.event_append(*payloads)
        elif self.role != "active":
            raise LeaseLost(
                f"this coordinator is {self.role}: it may not drive the engine",
                hint="send the request to the active coordinator",
            )
        else:  # fenced: it commits only while this coordinator holds the lease
            self._seq = self.lease.append_event(*payloads)

    def _before(self, event: Event) -> None:
        if isinstance(event, NodeLost | NodeRestarted) and not self._replaying:
            # The engine fails every live instance of the node (and sends no cancel to
            # a lost node); a run still queued for it must not reach the node when (if)
            # it comes back. Done first, so a retry on the same node stays queued.
            why = f"node lost: {event.reason}"
            for inst in self.engine.active(event.node_id):
                self.queues.cancel(event.node_id, inst.instance_id, why)

    def _after(self, event: Event, instructions: list[Instruction]) -> None:
        if not self._replaying:
            self.changes.notify()

    def _on_run(self, ins: RunInstance) -> None:
        if not self._replaying:
            self.queues.push_run(ins.node_id, self._run_item(ins))

    def _on_cancel(self, ins: CancelInstance) -> None:
        if not self._replaying:
            self.queues.cancel(ins.node_id, ins.instance_id, ins.reason)

    def _on_wake(self, ins: WakeAt) -> None:
        self._wake = ins.at
        if not self._replaying:
            with self._tick:  # engine lock, then this one; the ticker never the reverse
                self._tick.notify_all()

    def _on_iteration(self, ins: IterationStarted) -> None:
        if not self._replaying:
            self._record(ins.swarm_id, "running", "", ins.iteration)

    def _on_finished(self, ins: SwarmFinished) -> None:
        if not self._replaying:
            self._record(ins.swarm_id, ins.status, ins.reason, max(ins.iterations - 1, -1))
            log.info("swarm %s %s: %s", ins.swarm_id, ins.status, ins.reason)

    def _record(self, swarm_id: str, status: str, reason: str, iteration: int) -> None:
        # The engine has moved on and the rest of its instructions must still be carried
        # out: a failed status write is logged, not raised (the status route reads the
        # engine, and a restart writes every swarm's status again).
        try:
            self.store.swarm_update(swarm_id, status, reason, iteration)
        except Exception:
            log.exception("recording the status of swarm %s failed", swarm_id)

    def _run_item(self, inst: RunInstance | InstanceView) -> RunInstruction:
        """A run instruction; ``global_versions`` is filled in when it is delivered."""
        plan = self.engine.plan(inst.swarm_id)
        module = plan.modules[inst.module]
        try:
            need = parse_resources(module.resources).with_gpu(plan.task(inst.alias).placement.gpu)
        except ValueError:  # the engine failed such a swarm at submission
            need = NO_NEED
        return RunInstruction(
            swarm_id=inst.swarm_id,
            instance_id=inst.instance_id,
            alias=inst.alias,
            iteration=inst.iteration,
            attempt=inst.attempt,
            module=module.digest,  # the bundle; inst.module is the plan's module key
            datasets=list(module.datasets),
            image=module.image,
            timeout_s=inst.timeout_s,
            requirements=list(module.requirements),
            cpu=need.cpu,
            memory=need.memory,
            gpu=need.gpu,
            network=plan.task(inst.alias).network,
            fresh_process=module.fresh_process,
        )

    # -------------------------------------------------------------- instances
    def _owned(self, node_id: str, instance_id: str) -> InstanceView | None:
        """The live instance if ``node_id`` owns it; None if it ended; else 404/403."""
        inst = self.engine.find_instance(instance_id)
        if inst is None:
            raise not_found("instance", instance_id)
        if inst.node_id != node_id:
            raise forbidden(f"instance {instance_id!r} does not run on node {node_id!r}")
        return None if inst.ended else inst

    def started(self, node_id: str, instance_id: str) -> None:
        """The node began running the instance (a repeat is ignored)."""
        with self._lock:
            inst = self._owned(node_id, instance_id)
            if inst is not None and inst.state is InstanceState.SCHEDULED:
                self.feed(InstanceStarted(instance_id, self.clock()))

    def done(
        self,
        node_id: str,
        instance_id: str,
        ok: bool,
        error: str,
        tb: str,
        kind: str,
        started: bool = False,
        calls: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        """The instance ended on its node; a repeat (or a report after the engine ended
        it) is acknowledged and ignored. ``started``: the report of its start comes with
        this one (it ended within moments). ``calls``: one-way world calls it made last,
        held back by its agent to come with this report: they run first (whether it
        succeeded or not, as they would have on their own), and a success whose call
        fails is the instance's failure, as the call's own failure would have made it."""
        for op, args in calls:  # a repeat's calls fail as "already ended": ignored
            try:
                self.world_calls(node_id, instance_id, [(op, args)])
            except Exception as e:  # every call runs, as each would have on its own
                if ok:
                    ok, tb, kind = False, "", "error"
                    error = f"{op} failed: {storage_full(e, f'{op} of {instance_id}') or e}"
        with self._lock:
            inst = self._owned(node_id, instance_id)
            if inst is None:
                return
            now = self.clock()
            # Its start and its end in one transaction (both before the answer).
            events: list[Event] = []
            if started and inst.state is InstanceState.SCHEDULED:
                events.append(InstanceStarted(instance_id, now))
            if ok:
                events.append(self.succeeded(instance_id, now))
            else:
                # The user's files are not on this machine: name modules as declared.
                labels = self.module_labels(inst.swarm_id)
                error, tb = user_paths(error, labels), user_paths(tb, labels)
                events.append(InstanceFailed(instance_id, now, error, tb, FailureKind(kind)))
            self.feed(*events)

    def world_calls(
        self, node_id: str, instance_id: str, calls: list[tuple[str, dict[str, Any]]]
    ) -> Any:
        """Answer world operations of an instance, in order (outside the engine lock);
        return the last one's value. Every call runs; the first error is raised."""
        with self._lock:
            inst = self._owned(node_id, instance_id)
            info = None if inst is None else self.instance_info(inst)
        if info is None:
            raise ShoalError(
                f"instance {instance_id} has already ended",
                code="world.ended",
                hint="the swarm or the engine ended this instance; its work is discarded",
            )
        result: Any = None
        error: Exception | None = None
        for op, args in calls:
            try:
                result = self.world.handle(info, op, args)
            except Exception as e:
                error = error or e
        if any(op == ops.LOG.name for op, _ in calls):
            self.log_changes.notify()
        if error is not None:
            raise error
        return result

    def _world_event(self, event: StopSwarmCalled | NextIterScheduled | InvokeCalled) -> None:
        with self._lock:
            inst = self.engine.find_instance(event.instance_id)
            if inst is not None and not inst.ended:
                self.feed(event)

    # ----------------------------------------------------------------- swarms
    def submit(
        self, plan: Plan, seed: int, owner: str = "user", task_timeout_s: float | None = None
    ) -> str:
        """Record a swarm, write its initial globals and hand it to the engine
        (``task_timeout_s``: its tasks' timeout where they declare none)."""
        swarm_id = uuid.uuid4().hex[:16]
        self.store.swarm_create(
            SwarmRecord(swarm_id, plan.name, plan.to_json(), owner, self.clock())
        )
        self.access.bundles(swarm_id, sorted({m.digest for m in plan.modules.values()}))
        self.submit_swarm(swarm_id, plan, seed, task_timeout_s)
        return swarm_id

    def runs_bundle(self, node_id: str, digest: str) -> bool:
        """Whether the node has a live instance of a module whose bundle is ``digest``
        (a node fetches only the bundles of what it runs)."""
        with self._lock:
            for inst in self.engine.active(node_id):
                module = self.engine.plan(inst.swarm_id).modules.get(inst.module)
                if module is not None and module.digest == digest:
                    return True
        return False

    def stop_swarm(self, swarm_id: str) -> None:
        """A user stops a swarm (a no-op once it finished)."""
        if self.store.swarm_get(swarm_id) is None:
            raise not_found("swarm", swarm_id)
        with self._lock:
            if self.plan_of(swarm_id) is not None:
                self.feed(StopRequested(swarm_id, self.clock()))

    def plan_of(self, swarm_id: str) -> Plan | None:
        """The plan of a swarm the engine hosts."""
        with self._lock:
            try:
                return self.engine.plan(swarm_id)
            except EngineError:
                return None

    def status(self, swarm_id: str) -> SwarmReport:
        """A swarm's record and, if the engine hosts it, its view and task counts.

        Raises
        ------
        ApiError
            404 if no swarm has this id.
        """
        rec = self.store.swarm_get(swarm_id)
        if rec is None:
            raise not_found("swarm", swarm_id)
        with self._lock:
            if self.plan_of(swarm_id) is None:
                return SwarmReport(rec, None, {})
            running = self.engine.active(swarm_id=swarm_id, limit=RUNNING_SHOWN)
            return SwarmReport(
                rec,
                self.engine.swarm(swarm_id),
                self.engine.counts(swarm_id),
                self.engine.waiting(swarm_id),
                tuple(running),
            )

    def story(self, instance_id: str) -> list[str]:
        """What happened to an instance (see :meth:`DriverBase.story`); 404 if unknown."""
        with self._lock:
            if self.engine.find_instance(instance_id) is None:
                raise not_found("instance", instance_id)
            return self.engine.story(instance_id)
