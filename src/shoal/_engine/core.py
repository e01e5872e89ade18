"""The engine's state and its decisions: placement, retries, conditions, iterations.

:class:`~shoal._engine.engine.Engine` adds the public surface and the event handlers
on top; this class never sees an event, only the time and cause id of the current one.
"""

from __future__ import annotations

from typing import Literal

from shoal._engine.errors import EngineError
from shoal._engine.messages import (
    CancelInstance,
    FailureKind,
    Instruction,
    IterationStarted,
    RunInstance,
    SwarmFinished,
    WakeAt,
)
from shoal._engine.placement import (
    Requirements,
    choose,
    choose_retry,
    choose_share,
    explain,
    seeded_rng,
    sequence_order,
    share_group,
)
from shoal._engine.state import (
    REPORTS,
    TERMINAL,
    TRANSITIONS,
    Instance,
    LoopRun,
    Move,
    Node,
    RunPhase,
    Slot,
    SlotOutcome,
    SwarmState,
    SwarmStatus,
    TaskRun,
)
from shoal._engine.timers import Target, Timers
from shoal._engine.views import (
    failure_of,
    format_story,
)
from shoal._plan import Method, Order

_RUNNING = SwarmStatus.RUNNING


# When a task's timeout starts to count: when its instance is scheduled (a real node's
# download and start-up included), or when the instance reports it started (the
# simulator: a virtual node's instance does not exist while it waits for a worker).
TimeoutFrom = Literal["scheduled", "started"]


class EngineCore:
    """State of every swarm, node and instance, and the rules that change it."""

    def __init__(self, timeout_from: TimeoutFrom = "scheduled", fixed_nodes: bool = False) -> None:
        if timeout_from not in ("scheduled", "started"):
            raise EngineError(
                f"timeout_from={timeout_from!r} is neither 'scheduled' nor 'started'",
                code="engine.timeout_from",
                hint="pass timeout_from='scheduled' (real nodes) or 'started' (simulator)",
            )
        self._timeout_at_start = timeout_from == "started"
        # A driver whose node set never changes (the simulator): waiting for a node to
        # join is pointless, so a task with no eligible node fails the swarm at once.
        self._fixed_nodes = fixed_nodes
        self._event_id = 0
        self._now = 0.0
        self._event_name = ""
        self._out: list[Instruction] = []
        self._nodes: dict[str, Node] = {}
        self._swarms: dict[str, SwarmState] = {}
        self._instances: dict[str, Instance] = {}
        # Tasks that are ready but have no eligible node, across swarms.
        self._waiting: dict[tuple[str, int, str], TaskRun] = {}
        self._timers = Timers()
        self._last_wake: float | None = None

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
        if inst.calls:
            self._close_calls(inst)

    def _close_calls(self, inst: Instance) -> None:
        """``inst`` ended with open world.invoke calls (``calls.CallsMixin``)."""

    def _check_call(self, run: TaskRun) -> None:
        """A world.invoke call's counters changed (``calls.CallsMixin``)."""

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
            # A chain or ring slot sees exactly what its first attempt saw.
            # A chain or ring slot, or an invoked instance, sees what its first attempt saw.
            keep = run.spec.order is not Order.PARALLEL or run.call is not None
            inputs = inst.inputs if keep else self._inputs(run)
            new = self._schedule(run, inst.slot, node, inst.attempt + 1, inputs)
            self._log(inst, f"retried as {new.instance_id} on node {node.node_id}")
            self._repin(run, inst.slot, node.node_id)
        else:
            inst.slot.outcome = SlotOutcome.FAILED
            run.open -= 1
            run.failed += 1
            self._log(inst, f"failure is final: {why}")
            self._advance(run, inst.slot)
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
        # A node that holds another slot of this task (live or succeeded) comes last:
        # two results of one task from one node collide in results.select().
        taken = self._nodes_of_other_slots(run, inst.slot)
        free = [n for n in untried if n.node_id not in taken]
        swarm = run.swarm
        slot, attempt = inst.slot.index, inst.attempt + 1
        if free:
            rng = seeded_rng(swarm.seed, swarm.swarm_id, run.iteration, run.alias, slot, attempt)
            return choose_retry(spec.placement.method, free, rng), ""
        if req.admits(same):
            return same, ""
        if untried:
            rng = seeded_rng(swarm.seed, swarm.swarm_id, run.iteration, run.alias, slot, attempt)
            return choose_retry(spec.placement.method, untried, rng), ""
        return None, "no eligible node is left to retry on"

    @staticmethod
    def _nodes_of_other_slots(run: TaskRun, but: Slot) -> dict[str, None]:
        """Nodes where another slot of ``run`` is live or has succeeded."""
        taken = {
            s.current.node_id: None
            for s in run.slots
            if s is not but and s.current is not None and s.outcome in (None, SlotOutcome.SUCCEEDED)
        }
        # Chain and ring slots not yet scheduled keep their planned node.
        taken.update((s.planned, None) for s in run.slots if s.planned and s.current is None)
        return taken

    # --------------------------------------------------------------------- task flow

    def _start_iteration(self, swarm: SwarmState) -> None:
        swarm.started_iterations += 1
        k = swarm.iteration
        swarm.sinks_ended[k] = 0
        self._out.append(IterationStarted(self._event_id, swarm.swarm_id, k))
        for alias in swarm.sources:
            if swarm.status is not _RUNNING:
                return
            self._make_ready(self._run(swarm, k, alias))

    def _run(self, swarm: SwarmState, iteration: int, alias: str) -> TaskRun:
        run = swarm.runs.get((iteration, alias))
        if run is None:
            run = swarm.runs[(iteration, alias)] = TaskRun(swarm, iteration, swarm.tasks[alias])
            loop = swarm.loop_of.get(alias)
            if loop is not None:  # an inner loop's task: in the loop's current pass
                run.loop_pass = self._loop_run(swarm, iteration, loop).pass_
        return run

    def _loop_run(self, swarm: SwarmState, iteration: int, loop: str) -> LoopRun:
        """The run of inner loop ``loop`` in ``iteration`` (made at its first task)."""
        found = swarm.loop_runs.get((iteration, loop))
        if found is None:
            found = LoopRun(loop, swarm.plan.loops[loop], iteration)
            swarm.loop_runs[(iteration, loop)] = found
        return found

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
            need=swarm.need(run.spec.module),
        )

    def _make_ready(self, run: TaskRun) -> None:
        """All upstream tasks released ``run``: place it, or wait for a node."""
        swarm = run.swarm
        eligible = self._requirements(run).eligible(self._nodes)
        if eligible:
            self._place(run, eligible)
            return
        timeout = swarm.plan.limits.placement_timeout_s
        if timeout == 0 or self._fixed_nodes or self._image_refused(run):
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
        group = share_group(swarm.plan, run.alias)
        if group is not None:  # blue-green: siblings split one permutation
            chosen = choose_share(
                swarm.plan, group, run.alias, eligible, swarm.seed, swarm.swarm_id
            )
        else:
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
        if spec.order is not Order.PARALLEL:
            self._place_sequence(run, chosen, inputs)
            return
        for i, node in enumerate(chosen):
            slot = Slot(i)
            run.slots.append(slot)
            self._schedule(run, slot, node, 0, inputs)

    def _inputs(self, run: TaskRun) -> dict[str, tuple[str, ...]]:
        """Upstream alias -> succeeded instance ids, as of now."""
        swarm = run.swarm
        inputs = {
            u: self._visible(self._run(swarm, run.iteration, u)) for u in swarm.upstream[run.alias]
        }
        if run.loop_pass:  # a later pass of an inner loop: its entries see the carry
            inputs.update(self._carry(run))
        return inputs

    def _carry(self, run: TaskRun) -> dict[str, tuple[str, ...]]:
        """What an entry task of pass p > 0 of an inner loop sees of pass p-1
        (``loops.LoopsMixin``)."""
        return {}

    def _visible(self, up: TaskRun) -> tuple[str, ...]:
        """What a downstream task sees of ``up``: every success; for a chain only the
        last one, for a ring only its last round's."""
        order = up.spec.order
        if order is Order.PARALLEL:
            return up.succeeded_tuple()
        if order is Order.CHAIN:
            return tuple(up.succeeded_ids[-1:])
        last_round = len(up.slots) - up.ring_size
        return tuple(i for i in up.succeeded_ids if self._instances[i].slot.index >= last_round)

    # ------------------------------------------------------------ chains and rings

    def _place_sequence(
        self, run: TaskRun, chosen: list[Node], inputs: dict[str, tuple[str, ...]]
    ) -> None:
        """Place a chain (slot k on the k-th node of a seeded order, one at a time) or a
        ring (R rounds of n slots; slot r*n+i on node i; round 0 at once)."""
        swarm, spec = run.swarm, run.spec
        order = sequence_order(chosen, swarm.seed, swarm.swarm_id, run.iteration, run.alias)
        n = len(order)
        run.ring_size = n
        if spec.order is Order.CHAIN:
            run.slots.extend(Slot(k, node.node_id) for k, node in enumerate(order))
            self._schedule(run, run.slots[0], order[0], 0, inputs)
            return
        rounds = spec.rounds if spec.rounds is not None else n
        run.slots.extend(Slot(s, order[s % n].node_id) for s in range(rounds * n))
        # min_results counts the last round; every earlier slot is needed.
        run.min_results = (rounds - 1) * n + run.min_results
        run.open = rounds * n
        for i in range(n):
            self._schedule(run, run.slots[i], order[i], 0, inputs)

    def _advance(self, run: TaskRun, slot: Slot) -> None:
        """Slot ``slot`` of a chain or ring ended (succeeded or failed for good):
        schedule the slot it unlocks."""
        order, swarm = run.spec.order, run.swarm
        if order is Order.PARALLEL or swarm.status is not _RUNNING:
            return
        ok = slot.outcome is SlotOutcome.SUCCEEDED
        if order is Order.CHAIN:
            nxt = slot.index + 1
            if nxt >= len(run.slots) or run.successes + run.open < run.min_results:
                return  # done, or _check_run fails the swarm
            last = run.succeeded_ids[-1:]
            inputs = {run.alias: tuple(last)} if last else self._first_inputs(run)
            self._start_slot(run, run.slots[nxt], inputs)
            return
        n = run.ring_size
        r, i = divmod(slot.index, n)
        if r + 1 >= len(run.slots) // n:
            return  # the last round: min_results decides
        if not ok:
            self._finish(
                swarm,
                SwarmStatus.FAILED,
                f"ring task '{run.alias}' lost slot {slot.index} (round {r}, node "
                f"{slot.planned}) in iteration {run.iteration}: the next round has no "
                f"input; " + self._task_failure(run).split("; ", 1)[-1],
            )
            return
        assert slot.current is not None
        after = run.slots[(r + 1) * n + (i + 1) % n]
        self._start_slot(run, after, {run.alias: (slot.current.instance_id,)})

    @staticmethod
    def _repin(run: TaskRun, slot: Slot, node_id: str) -> None:
        """A ring position whose slot moved to another node keeps that node in its
        later rounds (the value it holds lives there)."""
        if run.spec.order is Order.RING and slot.planned != node_id:
            for later in run.slots[slot.index :: run.ring_size]:
                later.planned = node_id

    def _first_inputs(self, run: TaskRun) -> dict[str, tuple[str, ...]]:
        """What the first slot of a chain saw (its upstream inputs)."""
        first = run.slots[0].current
        return dict(first.inputs) if first is not None else self._inputs(run)

    def _start_slot(self, run: TaskRun, slot: Slot, inputs: dict[str, tuple[str, ...]]) -> None:
        """Schedule a planned chain/ring slot on its node, or, if that node can no longer
        run it, on another eligible node (not ``all``), or count it as failed."""
        node = self._nodes.get(slot.planned or "")
        req = self._requirements(run)
        if node is None or not req.admits(node):
            node = None
            if run.spec.placement.method is not Method.ALL:
                taken = self._nodes_of_other_slots(run, slot)
                free = [m for m in req.eligible(self._nodes) if m.node_id not in taken]
                if free:
                    swarm = run.swarm
                    rng = seeded_rng(
                        swarm.seed, swarm.swarm_id, run.iteration, run.alias, slot.index
                    )
                    node = choose_retry(run.spec.placement.method, free, rng)
        if node is None:
            slot.outcome = SlotOutcome.FAILED
            run.open -= 1
            run.failed += 1
            run.swarm.skipped.append(
                f"slot {slot.index} of '{run.alias}' (node {slot.planned} is gone)"
            )
            self._advance(run, slot)
            return
        self._repin(run, slot, node.node_id)
        self._schedule(run, slot, node, 0, inputs)

    def _schedule(
        self,
        run: TaskRun,
        slot: Slot,
        node: Node,
        attempt: int,
        inputs: dict[str, tuple[str, ...]],
    ) -> Instance:
        swarm, spec = run.swarm, run.spec
        label = slot.index if run.call is None else f"c{run.call.number}.{slot.index}"
        iid = f"{swarm.swarm_id}/{run.label}/{run.alias}/{label}/{attempt}"
        timeout = self._timeout_of(run)
        deadline = None if self._timeout_at_start else self._now + timeout
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
                timeout_s=timeout,
                invoke=None if run.call is None else run.call.call_id,
                loop_pass=run.loop_pass,
            )
        )
        return inst

    def _check_run(self, run: TaskRun) -> None:
        """React to a change in ``run``'s counters: fail, release downstream, end."""
        swarm = run.swarm
        if swarm.status is not _RUNNING or run.phase is not RunPhase.PLACED:
            return
        if run.call is not None:
            self._check_call(run)
            return
        if run.successes + run.open < run.min_results:
            self._finish(swarm, SwarmStatus.FAILED, self._task_failure(run))
            return
        if not run.released and (
            run.open == 0 or (run.result_condition and run.successes >= run.min_results)
        ):
            run.released = True
            for alias in self._released_to(run):
                down = self._run(swarm, run.iteration, alias)
                down.ready_ups += 1
                if down.ready_ups == len(swarm.upstream[alias]):
                    self._make_ready(down)
                if swarm.status is not _RUNNING:
                    return
        if not run.ended and run.open == 0:
            run.ended = True
            if run.loop_pass is not None:
                self._loop_task_ended(run)
            elif run.alias in swarm.sinks:
                self._sink_ended(swarm, run.iteration)

    def _sink_ended(self, swarm: SwarmState, iteration: int) -> None:
        swarm.sinks_ended[iteration] += 1
        if swarm.sinks_ended[iteration] == len(swarm.sinks):
            self._end_iteration(swarm)

    def _released_to(self, run: TaskRun) -> tuple[str, ...]:
        """The tasks ``run`` releases now; an inner loop's task releases the tasks after
        the loop only when the loop ends (``loops.LoopsMixin``)."""
        return run.swarm.downstream[run.alias]

    def _loop_task_ended(self, run: TaskRun) -> None:
        """Every instance of a task of an inner loop's pass ended (``loops.LoopsMixin``)."""

    def _end_iteration(self, swarm: SwarmState) -> None:
        limit = swarm.plan.limits.max_iterations
        if swarm.stop_by is not None:
            self._finish(swarm, SwarmStatus.SUCCEEDED, swarm.stop_by)
        elif limit is not None and swarm.started_iterations >= limit:
            self._finish(swarm, SwarmStatus.SUCCEEDED, f"max_iterations reached ({limit})")
        else:
            self._start_iteration(swarm)

    def _finish(self, swarm: SwarmState, status: SwarmStatus, reason: str) -> None:
        """End ``swarm``: cancel what still runs, stop waiting, report."""
        why = f"swarm {swarm.swarm_id} {status.value}"
        for inst in list(swarm.active.values()):
            if inst.state in TERMINAL:  # cancelled with its caller's call just before
                continue
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
        for run in swarm.runs.values():
            if run.spec.order is not Order.PARALLEL:
                for slot in run.slots:
                    if slot.current is None and slot.outcome is None:  # never scheduled
                        slot.outcome = SlotOutcome.CANCELLED
                        run.open -= 1
                        run.cancelled += 1
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

    @staticmethod
    def _timeout_of(run: TaskRun) -> float:
        """The task's own timeout, else its swarm's default task timeout (never None)."""
        own = run.spec.timeout_s
        return run.swarm.task_timeout_s if own is None else own

    def _timeout_error(self, inst: Instance) -> str:
        """Why a timed-out instance failed; for the default timeout, also which task
        on which node never returned, and the knobs (the user did not ask for it)."""
        run = inst.run
        error = f"timed out after {self._timeout_of(run):g}s"
        if run.spec.timeout_s is None:
            error += (
                f", the run's default task timeout: task '{run.alias}' on node "
                f"{inst.node_id} did not return (if it needs longer, give the task a "
                "timeout, Task(timeout=...), or the run another default, --task-timeout)"
            )
        return error

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

    def _image_refused(self, run: TaskRun) -> bool:
        """Whether at least one node is connected and every connected node said it
        lacks the task's image: waiting for the placement timeout would only delay the
        same failure (a node that has the image may still join, but a deployment whose
        connected nodes all lack it is almost always a typo). Stops at the first
        connected node that has the image, so a join costs O(nodes) only when it fails."""
        image = run.swarm.plan.modules[run.spec.module].image
        connected = False
        for node in self._nodes.values():
            if not node.connected:
                continue
            if node.images is None or image in node.images:
                return False
            connected = True
        return connected

    def _placement_failure(self, run: TaskRun) -> str:
        limits = run.swarm.plan.limits
        if self._fixed_nodes:
            within = "(no node can join: the node set is fixed)"
        elif self._image_refused(run):
            within = "(every connected node lacks its image)"
        elif limits.placement_timeout_s == 0:
            within = "(placement_timeout=0: no waiting for a node to join)"
        else:
            within = f"within the placement timeout of {limits.placement_timeout_s:g}s"
        return (
            f"task '{run.alias}' (method {run.spec.placement.method.value}) found no "
            f"eligible node in iteration {run.iteration} {within}: "
            f"{explain(self._requirements(run), self._nodes)}"
        )

    # ------------------------------------------------------------------------- timers

    def _live(self, at: float, target: Target) -> bool:
        if isinstance(target, Instance):
            return target.state not in TERMINAL and target.deadline == at
        if target.call is not None:
            call = target.call
            return not call.done and call.deadline == at and target.swarm.status is _RUNNING
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
