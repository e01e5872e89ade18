"""The scheduling engine: a pure state machine from events to instructions.

No I/O, no wall clock (time comes from each event's ``now``), no global randomness
(placement draws from :func:`~shoal._engine.placement.seeded_rng`). Replaying one event
log into a fresh engine gives the same instructions, which is how a coordinator
rebuilds its state after a restart. The rules are written down in docs/engine.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal._engine import invariants
from shoal._engine.errors import EngineError
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
    RunInstance,
    StopRequested,
    StopSwarmCalled,
    SwarmFinished,
    SwarmSubmitted,
    TimerFired,
    WakeAt,
)
from shoal._engine.placement import (
    Requirements,
    choose,
    choose_retry,
    explain,
    seeded_rng,
)
from shoal._engine.state import (
    REPORTS,
    TERMINAL,
    TRANSITIONS,
    Instance,
    Move,
    Node,
    RunPhase,
    Slot,
    SlotOutcome,
    Swarm,
    SwarmStatus,
    TaskRun,
)
from shoal._engine.timers import Target, Timers
from shoal._engine.views import (
    InstanceView,
    SwarmView,
    failure_of,
    format_story,
    instance_view,
    swarm_view,
)
from shoal._plan import Method

_RUNNING = SwarmStatus.RUNNING
_EVENT_TYPES = (
    NodeJoined,
    NodeLost,
    SwarmSubmitted,
    InstanceStarted,
    InstanceSucceeded,
    InstanceFailed,
    StopSwarmCalled,
    NextIterScheduled,
    StopRequested,
    TimerFired,
)


class Engine:
    """Owns every scheduling decision of every swarm a driver hosts.

    Feed it events with :meth:`handle`; carry out the instructions it returns. Each
    handled event gets the next integer id (1, 2, ...), also when it is rejected, so
    ids match positions in the driver's event log; every instruction's ``cause`` is
    the id of the event that produced it.

    Examples
    --------
    >>> engine = Engine()
    >>> engine.handle(NodeJoined("n1", now=0.0))
    []
    """

    def __init__(self) -> None:
        self._event_id = 0
        self._now = 0.0
        self._event_name = ""
        self._out: list[Instruction] = []
        self._nodes: dict[str, Node] = {}
        self._swarms: dict[str, Swarm] = {}
        self._instances: dict[str, Instance] = {}
        # Tasks that are ready but have no eligible node, across swarms.
        self._waiting: dict[tuple[str, int, str], TaskRun] = {}
        self._timers = Timers()
        self._last_wake: float | None = None

    # ------------------------------------------------------------------ public surface

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event and return the instructions it causes, in order.

        Raises
        ------
        EngineError
            If the event is impossible in the current state (an unknown instance, a
            report that contradicts an earlier one, ...). The message carries the
            instance's story.
        """
        self._event_id += 1
        if not isinstance(event, _EVENT_TYPES):
            raise EngineError(f"unknown event {event!r}", code="engine.unknown_event")
        self._now = event.now
        self._event_name = type(event).__name__
        self._out = []
        self._dispatch(event)
        self._wake()
        out, self._out = self._out, []
        return out

    def handle_many(self, events: Iterable[Event]) -> list[Instruction]:
        """Apply events in order; return all their instructions concatenated."""
        out: list[Instruction] = []
        for event in events:
            out.extend(self.handle(event))
        return out

    def story(self, instance_id: str) -> list[str]:
        """What happened to an instance: one line per transition or decision.

        Each line reads ``t=<now> #<cause id> <event type>: <detail>``.
        """
        return format_story(self._instance(instance_id))

    def swarm(self, swarm_id: str) -> SwarmView:
        """A read-only snapshot of a swarm (status, iteration, plan, failures)."""
        swarm = self._swarms.get(swarm_id)
        if swarm is None:
            raise EngineError(f"unknown swarm {swarm_id!r}", code="engine.unknown_swarm")
        return swarm_view(swarm)

    def instance(self, instance_id: str) -> InstanceView:
        """A read-only snapshot of an instance."""
        return instance_view(self._instance(instance_id))

    def validate(self) -> None:
        """Check every invariant of the engine's state.

        Costs a pass over all state; tests call it after every event.

        Raises
        ------
        EngineError
            With code ``engine.invariant``, naming the broken invariant.
        """
        invariants.check(
            self._nodes, self._swarms, self._instances, self._waiting, self._timers.entries()
        )
        earliest = self._timers.earliest(self._live)
        if earliest is not None and earliest != self._last_wake:
            raise EngineError(
                f"earliest deadline {earliest} was not announced (last WakeAt {self._last_wake})",
                code="engine.invariant",
            )

    # ------------------------------------------------------------------------ events

    def _dispatch(self, event: Event) -> None:
        match event:
            case InstanceStarted():
                self._on_started(event)
            case InstanceSucceeded():
                self._on_succeeded(event)
            case InstanceFailed():
                self._on_failed(event)
            case NodeJoined():
                self._on_node_joined(event)
            case NodeLost():
                self._on_node_lost(event)
            case SwarmSubmitted():
                self._on_submitted(event)
            case StopSwarmCalled():
                self._on_stop_swarm(event)
            case NextIterScheduled():
                self._on_next_iter(event)
            case StopRequested():
                self._on_stop_requested(event)
            case TimerFired():
                self._on_timer(event)

    def _on_started(self, e: InstanceStarted) -> None:
        inst = self._report(e.instance_id, Move.STARTED)
        if inst is not None:
            self._move(inst, Move.STARTED, "started")

    def _on_succeeded(self, e: InstanceSucceeded) -> None:
        inst = self._report(e.instance_id, Move.SUCCEEDED)
        if inst is None:
            return
        self._move(inst, Move.SUCCEEDED, "succeeded")
        self._detach(inst)
        run = inst.run
        inst.slot.outcome = SlotOutcome.SUCCEEDED
        run.open -= 1
        run.succeeded_ids.append(inst.instance_id)
        self._check_run(run)

    def _on_failed(self, e: InstanceFailed) -> None:
        inst = self._report(e.instance_id, Move.FAILED)
        if inst is not None:
            self._fail(inst, Move.FAILED, e.kind, e.error, e.traceback, by_engine=False)

    def _on_stop_swarm(self, e: StopSwarmCalled) -> None:
        inst = self._report(e.instance_id, Move.STOP_SWARM)
        if inst is None:
            return
        self._move(inst, Move.STOP_SWARM, "called world.stop_swarm()")
        swarm = inst.run.swarm
        if swarm.stop_by is None:  # the first call names the swarm's end
            swarm.stop_by = (
                f"stopped by task {inst.run.alias} on node {inst.node_id} "
                f"in iteration {inst.run.iteration}"
            )

    def _on_next_iter(self, e: NextIterScheduled) -> None:
        inst = self._report(e.instance_id, Move.NEXT_ITER)
        if inst is None:
            return
        swarm = inst.run.swarm
        target = inst.run.iteration + 1
        run = swarm.runs.get((target, e.alias))
        call = f"schedule_next_iter({len(e.node_ids)} node(s), alias={e.alias!r})"
        if e.alias not in swarm.tasks:
            detail = f"{call} ignored: the plan has no task {e.alias!r}"
        elif run is not None and run.phase is not RunPhase.PENDING:
            detail = f"{call} ignored: iteration {target} of {e.alias!r} is already placed"
        else:
            # The last call for one (iteration, alias) wins.
            swarm.narrow[(target, e.alias)] = frozenset(e.node_ids)
            detail = f"{call} narrows iteration {target}"
        self._move(inst, Move.NEXT_ITER, detail)

    def _on_node_joined(self, e: NodeJoined) -> None:
        node = self._nodes.get(e.node_id)
        if node is None:
            self._nodes[e.node_id] = node = Node(e.node_id, e.datasets, e.gpu, e.images)
        else:
            node.connected = True
            node.datasets, node.gpu, node.images = e.datasets, e.gpu, e.images
        # Only this node changed, so a waiting task is worth re-placing only if this
        # node admits it; that keeps a join O(waiting tasks), not O(nodes).
        for run in list(self._waiting.values()):
            live = run.phase is RunPhase.WAITING and run.swarm.status is _RUNNING
            if live and self._requirements(run).admits(node):
                self._place(run, None)

    def _on_node_lost(self, e: NodeLost) -> None:
        node = self._nodes.get(e.node_id)
        if node is None:
            raise EngineError(
                f"NodeLost names unknown node {e.node_id!r}", code="engine.unknown_node"
            )
        if not node.connected:
            return  # lost twice (left, then its heartbeat timed out): nothing new
        node.connected = False
        for inst in list(node.active.values()):
            # A failure above may have ended the swarm and cancelled the rest.
            if inst.state not in TERMINAL:
                error = f"node {e.node_id} lost: {e.reason}"
                self._fail(inst, Move.LOST, FailureKind.LOST, error, "", by_engine=True)

    def _on_submitted(self, e: SwarmSubmitted) -> None:
        if e.swarm_id in self._swarms:
            raise EngineError(
                f"swarm {e.swarm_id!r} was already submitted", code="engine.duplicate_swarm"
            )
        swarm = Swarm(e.swarm_id, e.plan, e.seed)
        self._swarms[e.swarm_id] = swarm
        cycle = _cycle(swarm)
        if cycle:
            self._finish(swarm, SwarmStatus.FAILED, f"plan has a cycle through tasks {cycle}")
            return
        self._start_iteration(swarm)

    def _on_stop_requested(self, e: StopRequested) -> None:
        swarm = self._swarms.get(e.swarm_id)
        if swarm is None:
            raise EngineError(f"unknown swarm {e.swarm_id!r}", code="engine.unknown_swarm")
        if swarm.status is _RUNNING:  # stopping a finished swarm is a no-op
            self._finish(swarm, SwarmStatus.STOPPED, e.reason)

    def _on_timer(self, e: TimerFired) -> None:
        for at, target in self._timers.pop_due(e.now):
            if not self._live(at, target):
                continue
            if isinstance(target, Instance):
                error = f"timed out after {target.run.spec.timeout_s:g}s"
                self._fail(target, Move.TIMEOUT, FailureKind.TIMEOUT, error, "", by_engine=True)
            else:
                reason = self._placement_failure(target)
                self._finish(target.swarm, SwarmStatus.FAILED, reason)
        if self._last_wake is not None and self._last_wake <= e.now:
            self._last_wake = None  # the driver's wake-up is spent

    # ------------------------------------------------------------------ instance moves

    def _instance(self, instance_id: str) -> Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise EngineError(
                f"unknown instance {instance_id!r}",
                code="engine.unknown_instance",
                hint="instance ids come from RunInstance instructions of this engine",
            )
        return inst

    def _report(self, instance_id: str, move: Move) -> Instance | None:
        """The instance a node reports on, or None for a benign late report."""
        inst = self._instance(instance_id)
        if inst.state in TERMINAL and inst.ended_by_engine:
            self._log(inst, f"late report ignored ({move.value} after the engine ended it)")
            return None
        if (inst.state, move) not in TRANSITIONS:
            raise self._impossible(inst, move)
        return inst

    def _move(self, inst: Instance, move: Move, detail: str) -> None:
        new = TRANSITIONS.get((inst.state, move))
        if new is None:
            raise self._impossible(inst, move)
        inst.state = new
        self._log(inst, detail)

    def _impossible(self, inst: Instance, move: Move) -> EngineError:
        lines = "\n  ".join(format_story(inst))
        who = "report" if move in REPORTS else "engine move"
        return EngineError(
            f"impossible {who} {move.value!r} ({self._event_name}, event #{self._event_id}) "
            f"for instance {inst.instance_id} in state {inst.state.value}; its story:\n  "
            f"{lines}",
            code="engine.impossible_move",
            hint="the driver delivered a report twice or out of order",
        )

    def _log(self, inst: Instance, detail: str) -> None:
        inst.story.append((self._now, self._event_id, self._event_name, detail))

    def _detach(self, inst: Instance) -> None:
        """Forget a now-terminal instance in the load and active sets."""
        del self._nodes[inst.node_id].active[inst.instance_id]
        del inst.run.swarm.active[inst.instance_id]

    def _fail(
        self,
        inst: Instance,
        move: Move,
        kind: FailureKind,
        error: str,
        traceback: str,
        *,
        by_engine: bool,
    ) -> None:
        self._move(inst, move, f"failed ({kind.value}): {error}")
        inst.kind, inst.error, inst.traceback = kind, error, traceback
        inst.ended_by_engine = by_engine
        self._detach(inst)
        run = inst.run
        run.swarm.failed.append(inst)
        if move is Move.TIMEOUT:  # the node may still be running it
            self._out.append(
                CancelInstance(
                    self._event_id, run.swarm.swarm_id, inst.instance_id, inst.node_id, error
                )
            )
        node, why = self._retry_node(inst)
        if node is not None:
            new = self._schedule(run, inst.slot, node, inst.attempt + 1, self._inputs(run))
            self._log(inst, f"retried as {new.instance_id} on node {node.node_id}")
        else:
            inst.slot.outcome = SlotOutcome.FAILED
            run.open -= 1
            run.failed += 1
            self._log(inst, f"failure is final: {why}")
        self._check_run(run)

    def _retry_node(self, inst: Instance) -> tuple[Node | None, str]:
        """Where the next attempt of ``inst``'s slot runs, or why there is none."""
        run, spec = inst.run, inst.run.spec
        if inst.attempt >= spec.retries:
            return None, f"no retries left (retries={spec.retries})"
        if run.released and run.result_condition:
            # Its downstream already started; nobody would ever see this result.
            return None, "task already released its downstream (condition=result)"
        same = self._nodes[inst.node_id]
        if spec.placement.method is Method.ALL:
            if same.connected:
                return same, ""
            return None, f"node {inst.node_id} is disconnected (method all retries in place)"
        req = self._requirements(run)
        untried = [n for n in req.eligible(self._nodes) if n.node_id not in inst.slot.tried]
        if untried:
            swarm = run.swarm
            rng = seeded_rng(
                swarm.seed, swarm.swarm_id, run.iteration, run.alias, inst.slot.index,
                inst.attempt + 1,
            )  # fmt: skip
            return choose_retry(spec.placement.method, untried, rng), ""
        if req.admits(same):
            return same, ""
        return None, "no eligible node is left to retry on"

    # --------------------------------------------------------------------- task flow

    def _start_iteration(self, swarm: Swarm) -> None:
        swarm.started_iterations += 1
        k = swarm.iteration
        swarm.sinks_ended[k] = 0
        self._out.append(IterationStarted(self._event_id, swarm.swarm_id, k))
        for alias in swarm.sources:
            if swarm.status is not _RUNNING:
                return
            self._make_ready(self._run(swarm, k, alias))

    def _run(self, swarm: Swarm, iteration: int, alias: str) -> TaskRun:
        run = swarm.runs.get((iteration, alias))
        if run is None:
            run = swarm.runs[(iteration, alias)] = TaskRun(swarm, iteration, swarm.tasks[alias])
        return run

    def _requirements(self, run: TaskRun) -> Requirements:
        swarm, p = run.swarm, run.spec.placement
        module = swarm.plan.modules[run.spec.module]
        return Requirements(
            datasets=module.datasets,
            gpu=p.gpu,
            image=module.image,
            specified=None if p.specified_ids is None else frozenset(p.specified_ids),
            excepted=frozenset(p.excepted_ids),
            narrowed=swarm.narrow.get((run.iteration, run.alias)),
            pinned=swarm.pins.get(run.alias) if p.fixed else None,
        )

    def _make_ready(self, run: TaskRun) -> None:
        """All upstream tasks released ``run``: place it, or wait for a node."""
        swarm = run.swarm
        eligible = self._requirements(run).eligible(self._nodes)
        if eligible:
            self._place(run, eligible)
            return
        timeout = swarm.plan.limits.placement_timeout_s
        if timeout == 0:
            self._finish(swarm, SwarmStatus.FAILED, self._placement_failure(run))
            return
        run.phase = RunPhase.WAITING
        run.deadline = self._now + timeout
        swarm.waiting[(run.iteration, run.alias)] = run
        self._waiting[(swarm.swarm_id, run.iteration, run.alias)] = run
        self._timers.push(run.deadline, run)

    def _unwait(self, run: TaskRun) -> None:
        if run.phase is RunPhase.WAITING:
            swarm = run.swarm
            swarm.waiting.pop((run.iteration, run.alias), None)
            self._waiting.pop((swarm.swarm_id, run.iteration, run.alias), None)
            run.deadline = None

    def _place(self, run: TaskRun, eligible: list[Node] | None) -> None:
        swarm, spec = run.swarm, run.spec
        if eligible is None:
            eligible = self._requirements(run).eligible(self._nodes)
        rng = seeded_rng(swarm.seed, swarm.swarm_id, run.iteration, run.alias)
        chosen = choose(spec.placement, eligible, rng)
        n = len(chosen)
        needed = n if spec.min_results is None else spec.min_results
        self._unwait(run)
        run.phase = RunPhase.PLACED
        if needed > n:
            reason = (
                f"task '{run.alias}' needs min_results={needed} in iteration "
                f"{run.iteration} but only {n} instance(s) could be placed "
                f"({len(eligible)} eligible node(s), method {spec.placement.method.value})"
            )
            self._finish(swarm, SwarmStatus.FAILED, reason)
            return
        run.min_results = needed
        run.open = n
        if spec.placement.fixed and run.alias not in swarm.pins:
            swarm.pins[run.alias] = frozenset(node.node_id for node in chosen)
        inputs = self._inputs(run)
        for i, node in enumerate(chosen):
            slot = Slot(i)
            run.slots.append(slot)
            self._schedule(run, slot, node, 0, inputs)

    def _inputs(self, run: TaskRun) -> dict[str, tuple[str, ...]]:
        """Upstream alias -> succeeded instance ids, as of now."""
        swarm = run.swarm
        return {
            u: self._run(swarm, run.iteration, u).succeeded_tuple()
            for u in swarm.upstream[run.alias]
        }

    def _schedule(
        self,
        run: TaskRun,
        slot: Slot,
        node: Node,
        attempt: int,
        inputs: dict[str, tuple[str, ...]],
    ) -> Instance:
        swarm, spec = run.swarm, run.spec
        iid = f"{swarm.swarm_id}/{run.iteration}/{run.alias}/{slot.index}/{attempt}"
        deadline = None if spec.timeout_s is None else self._now + spec.timeout_s
        inst = Instance(iid, run, slot, attempt, node.node_id, inputs, deadline)
        self._instances[iid] = swarm.active[iid] = node.active[iid] = inst
        slot.current = inst
        slot.tried[node.node_id] = None
        self._log(inst, f"scheduled on node {node.node_id} (slot {slot.index}, attempt {attempt})")
        if deadline is not None:
            self._timers.push(deadline, inst)
        self._out.append(
            RunInstance(
                cause=self._event_id,
                swarm_id=swarm.swarm_id,
                instance_id=iid,
                node_id=node.node_id,
                alias=run.alias,
                iteration=run.iteration,
                attempt=attempt,
                module=spec.module,
                inputs=dict(inputs),
                timeout_s=spec.timeout_s,
            )
        )
        return inst

    def _check_run(self, run: TaskRun) -> None:
        """React to a change in ``run``'s counters: fail, release downstream, end."""
        swarm = run.swarm
        if swarm.status is not _RUNNING or run.phase is not RunPhase.PLACED:
            return
        if run.successes + run.open < run.min_results:
            self._finish(swarm, SwarmStatus.FAILED, self._task_failure(run))
            return
        if not run.released and (
            run.open == 0 or (run.result_condition and run.successes >= run.min_results)
        ):
            run.released = True
            for alias in swarm.downstream[run.alias]:
                down = self._run(swarm, run.iteration, alias)
                down.ready_ups += 1
                if down.ready_ups == len(swarm.upstream[alias]):
                    self._make_ready(down)
                if swarm.status is not _RUNNING:
                    return
        if not run.ended and run.open == 0:
            run.ended = True
            if run.alias in swarm.sinks:
                swarm.sinks_ended[run.iteration] += 1
                if swarm.sinks_ended[run.iteration] == len(swarm.sinks):
                    self._end_iteration(swarm)

    def _end_iteration(self, swarm: Swarm) -> None:
        limit = swarm.plan.limits.max_iterations
        if swarm.stop_by is not None:
            self._finish(swarm, SwarmStatus.SUCCEEDED, swarm.stop_by)
        elif limit is not None and swarm.started_iterations >= limit:
            self._finish(swarm, SwarmStatus.SUCCEEDED, f"max_iterations reached ({limit})")
        else:
            self._start_iteration(swarm)

    def _finish(self, swarm: Swarm, status: SwarmStatus, reason: str) -> None:
        """End ``swarm``: cancel what still runs, stop waiting, report."""
        why = f"swarm {swarm.swarm_id} {status.value}"
        for inst in list(swarm.active.values()):
            self._move(inst, Move.CANCEL, f"cancelled: {why}")
            inst.kind, inst.error, inst.ended_by_engine = FailureKind.CANCELLED, why, True
            self._detach(inst)
            inst.slot.outcome = SlotOutcome.CANCELLED
            inst.run.open -= 1
            inst.run.cancelled += 1
            self._out.append(
                CancelInstance(self._event_id, swarm.swarm_id, inst.instance_id, inst.node_id, why)
            )
        for run in list(swarm.waiting.values()):
            self._unwait(run)
        swarm.status = status
        swarm.reason = reason
        self._out.append(
            SwarmFinished(
                cause=self._event_id,
                swarm_id=swarm.swarm_id,
                status=status.value,
                iterations=swarm.started_iterations,
                reason=reason,
                failures=tuple(failure_of(i) for i in swarm.failed),
            )
        )

    # ------------------------------------------------------------------------ messages

    def _task_failure(self, run: TaskRun) -> str:
        reason = (
            f"task '{run.alias}' failed in iteration {run.iteration}: {run.successes} of "
            f"{len(run.slots)} instance(s) succeeded, {run.failed} failed for good, "
            f"{run.open} still running; it needs min_results={run.min_results}"
        )
        last = next((i for i in reversed(run.swarm.failed) if i.run is run), None)
        if last is not None and last.kind is not None:
            reason += (
                f"; last failure: {last.instance_id} on node {last.node_id} "
                f"({last.kind.value}): {last.error}"
            )
        return reason

    def _placement_failure(self, run: TaskRun) -> str:
        limits = run.swarm.plan.limits
        return (
            f"task '{run.alias}' (method {run.spec.placement.method.value}) found no "
            f"eligible node in iteration {run.iteration} within the placement timeout of "
            f"{limits.placement_timeout_s:g}s: "
            f"{explain(self._requirements(run), self._nodes)}"
        )

    # ------------------------------------------------------------------------- timers

    def _live(self, at: float, target: Target) -> bool:
        if isinstance(target, Instance):
            return target.state not in TERMINAL and target.deadline == at
        return (
            target.phase is RunPhase.WAITING
            and target.deadline == at
            and target.swarm.status is _RUNNING
        )

    def _wake(self) -> None:
        at = self._timers.earliest(self._live)
        if at is not None and at != self._last_wake:
            self._last_wake = at
            self._out.append(WakeAt(self._event_id, at))


def _cycle(swarm: Swarm) -> list[str]:
    """Tasks on or behind a cycle (Kahn's algorithm); empty for a DAG."""
    indegree = {a: len(ups) for a, ups in swarm.upstream.items()}
    todo = [a for a, d in indegree.items() if d == 0]
    seen = 0
    while todo:
        a = todo.pop()
        seen += 1
        for d in swarm.downstream[a]:
            indegree[d] -= 1
            if indegree[d] == 0:
                todo.append(d)
    if seen == len(indegree):
        return []
    return [a for a, d in indegree.items() if d > 0]
