"""On-demand tasks: ``world.invoke`` calls (docs/engine.md, "On-demand tasks").

A call is a :class:`~shoal._engine.state.TaskRun` of the invoked task with a
:class:`~shoal._engine.state.Call` attached: its instances are placed, retried and timed
out by the same code as graph tasks; only the end differs (an ``InvokeFinished`` to the
caller instead of releasing downstream tasks).
"""

from __future__ import annotations

from shoal._engine.core import EngineCore
from shoal._engine.messages import CancelInstance, FailureKind, InvokeCalled, InvokeFinished
from shoal._engine.placement import choose, explain, seeded_rng
from shoal._engine.state import (
    TERMINAL,
    Call,
    Instance,
    Move,
    RunPhase,
    Slot,
    SlotOutcome,
    SwarmStatus,
    TaskRun,
)
from shoal._engine.views import failure_of


class CallsMixin(EngineCore):
    """``InvokeCalled``, and how a call ends."""

    def _on_invoke(self, e: InvokeCalled) -> None:
        caller = self._instance(e.instance_id)
        swarm = caller.run.swarm
        if caller.state in TERMINAL or swarm.status is not SwarmStatus.RUNNING:
            # The caller ended (or its swarm) before its call arrived: a benign race.
            self._log(caller, f"late invoke {e.call_id} ignored (the instance has ended)")
            return
        spec = swarm.tasks.get(e.alias)
        run = TaskRun(swarm, caller.run.iteration, spec or caller.run.spec)
        run.loop_pass = caller.run.loop_pass  # its ids carry the caller's loop pass
        run.phase = RunPhase.PLACED
        timeout = e.timeout_s
        if timeout is None:
            own = self._timeout_of(run)
            timeout = own * (run.spec.retries + 1) + swarm.plan.limits.placement_timeout_s
        run.call = Call(e.call_id, caller, caller.calls_made, self._now, self._now + timeout)
        caller.calls_made += 1
        self._log(caller, f"invoked '{e.alias}' (call {e.call_id})")
        if spec is None or not spec.on_demand:
            why = "is not a task of the swarm" if spec is None else "is not declared on_demand"
            self._end_call(run, "failed", f"call {e.call_id}: task '{e.alias}' {why}")
            return
        req = self._requirements(run)
        eligible = req.eligible(self._nodes)
        if e.node_ids is not None:
            ok = {n.node_id: n for n in eligible}
            bad = [n for n in e.node_ids if n not in ok]
            chosen = [] if bad else [ok[n] for n in sorted(dict.fromkeys(e.node_ids))]
            why = f"nodes {bad} are not eligible" if bad else ""
        else:
            rng = seeded_rng(swarm.seed, swarm.swarm_id, run.iteration, e.call_id)
            chosen = choose(spec.placement, eligible, rng) if eligible else []
            why = "no eligible node"
        need = len(chosen) if e.min_results is None else e.min_results
        if not chosen or need > len(chosen):
            self._end_call(
                run,
                "failed",
                f"call {e.call_id} of task '{e.alias}' needs {need or 1} instance(s) but "
                f"{len(chosen)} could be placed ({why or 'too few eligible nodes'}): "
                f"{explain(req, self._nodes)}",
            )
            return
        run.min_results = need
        run.open = len(chosen)
        caller.calls[e.call_id] = run
        self._timers.push(run.call.deadline, run)
        inputs: dict[str, tuple[str, ...]] = {caller.run.alias: (caller.instance_id,)}
        for i, node in enumerate(chosen):
            slot = Slot(i)
            run.slots.append(slot)
            self._schedule(run, slot, node, 0, inputs)

    def _check_call(self, run: TaskRun) -> None:
        """A call's counters changed: fail it when min_results is out of reach, end it
        when every slot has ended."""
        call = run.call
        assert call is not None
        if call.done:
            return
        if run.successes + run.open < run.min_results:
            self._end_call(run, "failed", self._call_failure(run, "failed"))
        elif run.open == 0:
            self._end_call(run, "succeeded", "")

    def _call_timeout(self, run: TaskRun) -> None:
        call = run.call
        assert call is not None
        if run.successes >= run.min_results:
            self._end_call(run, "succeeded", "")
        else:
            self._end_call(run, "failed", self._call_failure(run, "timed out"))

    def _call_failure(self, run: TaskRun, how: str) -> str:
        call = run.call
        assert call is not None
        reason = (
            f"call {call.call_id} of task '{run.alias}' {how}: {run.successes} of "
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

    def _end_call(self, run: TaskRun, status: str, reason: str, *, answer: bool = True) -> None:
        """Cancel the call's live instances and, unless its caller is gone, answer it."""
        call = run.call
        assert call is not None
        call.done = True
        call.caller.calls.pop(call.call_id, None)
        why = f"call {call.call_id} ended"
        for slot in run.slots:
            inst = slot.current
            if inst is not None and inst.state not in TERMINAL:
                self._cancel(inst, why)
        if not answer:
            return
        caller = call.caller
        if caller.deadline is not None and caller.state not in TERMINAL:
            # The caller's own timeout does not run while it waits on its call.
            caller.deadline += self._now - call.since
            self._timers.push(caller.deadline, caller)
        self._out.append(
            InvokeFinished(
                cause=self._event_id,
                swarm_id=run.swarm.swarm_id,
                call_id=call.call_id,
                caller_instance_id=caller.instance_id,
                status=status,
                results={self._instance(i).node_id: i for i in run.succeeded_ids},
                reason=reason,
                failures=tuple(failure_of(i) for i in run.swarm.failed if i.run is run),
            )
        )

    def _cancel(self, inst: Instance, why: str) -> None:
        self._move(inst, Move.CANCEL, f"cancelled: {why}")
        inst.kind, inst.error, inst.ended_by_engine = FailureKind.CANCELLED, why, True
        self._detach(inst)
        inst.slot.outcome = SlotOutcome.CANCELLED
        inst.run.open -= 1
        inst.run.cancelled += 1
        self._out.append(
            CancelInstance(
                self._event_id, inst.run.swarm.swarm_id, inst.instance_id, inst.node_id, why
            )
        )

    def _close_calls(self, inst: Instance) -> None:
        """``inst`` ended: its open calls end too, unanswered (nobody waits)."""
        for run in list(inst.calls.values()):
            self._end_call(run, "failed", "", answer=False)
