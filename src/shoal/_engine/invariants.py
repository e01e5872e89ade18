"""Invariants of the engine's state, checked by :meth:`Engine.validate`.

Each check recounts from scratch what the engine maintains incrementally (loads,
active sets, per-task counters), so a bookkeeping slip shows up at the event that
caused it rather than as a hang many events later.
"""

from __future__ import annotations

from collections.abc import Mapping

from shoal._engine.errors import EngineError
from shoal._engine.state import (
    TERMINAL,
    Instance,
    InstanceState,
    Node,
    RunPhase,
    SlotOutcome,
    SwarmState,
    SwarmStatus,
    TaskRun,
)
from shoal._engine.timers import Target


def _broken(message: str) -> EngineError:
    return EngineError(f"engine invariant broken: {message}", code="engine.invariant")


def check(
    nodes: Mapping[str, Node],
    swarms: Mapping[str, SwarmState],
    instances: Mapping[str, Instance],
    waiting: Mapping[tuple[str, int, str], TaskRun],
    timers: list[tuple[float, Target]],
) -> None:
    """Raise :class:`EngineError` (``engine.invariant``) if any invariant is broken."""
    _check_instances(nodes, instances)
    for node in nodes.values():
        if not node.connected and node.active:
            raise _broken(f"disconnected node {node.node_id} still has live instances")
    for swarm in swarms.values():
        _check_swarm(swarm)
    for (swarm_id, iteration, alias), run in waiting.items():
        if (
            run.swarm.swarm_id != swarm_id
            or (run.iteration, run.alias) != (iteration, alias)
            or run.phase is not RunPhase.WAITING
            or run.swarm.status is not SwarmStatus.RUNNING
            or run.deadline is None
            or run.swarm.waiting.get((iteration, alias)) is not run
        ):
            raise _broken(f"waiting entry {swarm_id}/{iteration}/{alias} is inconsistent")
    timed = {id(t) for at, t in timers if isinstance(t, Instance) and t.deadline == at}
    for inst in instances.values():
        if inst.state not in TERMINAL and inst.deadline is not None and id(inst) not in timed:
            raise _broken(f"instance {inst.instance_id} has a deadline but no timer")
    for run in waiting.values():
        if not any(t is run and at == run.deadline for at, t in timers):
            raise _broken(f"waiting task {run.alias} has no placement timer")


def _check_instances(nodes: Mapping[str, Node], instances: Mapping[str, Instance]) -> None:
    live = 0
    for iid, inst in instances.items():
        if iid != inst.instance_id or not inst.story:
            raise _broken(f"instance {iid} is registered under the wrong id or has no story")
        node = nodes.get(inst.node_id)
        if node is None:
            raise _broken(f"instance {iid} is on unknown node {inst.node_id}")
        swarm = inst.run.swarm
        alive = inst.state not in TERMINAL
        if alive != (iid in node.active) or alive != (iid in swarm.active):
            raise _broken(f"instance {iid} ({inst.state.value}) and the active sets disagree")
        if alive:
            live += 1
            if swarm.status is not SwarmStatus.RUNNING:
                raise _broken(f"instance {iid} is live in finished swarm {swarm.swarm_id}")
        elif inst.state is not InstanceState.SUCCEEDED and inst.kind is None:
            raise _broken(f"instance {iid} ended {inst.state.value} without a kind")
        if inst.ended_by_engine and inst.state is InstanceState.SUCCEEDED:
            raise _broken(f"instance {iid} succeeded but is marked as ended by the engine")
    if live != sum(len(n.active) for n in nodes.values()):
        raise _broken("node loads do not add up to the live instances")


def _check_swarm(swarm: SwarmState) -> None:
    running = swarm.status is SwarmStatus.RUNNING
    if not running and (swarm.active or swarm.waiting):
        raise _broken(f"finished swarm {swarm.swarm_id} still has live or waiting tasks")
    if running and swarm.started_iterations < 1:
        raise _broken(f"running swarm {swarm.swarm_id} never started an iteration")
    for inst in swarm.failed:
        if inst.state is not InstanceState.FAILED:
            raise _broken(f"failure record {inst.instance_id} is {inst.state.value}")
    for run in swarm.runs.values():
        if run.phase is RunPhase.PLACED:
            _check_run(run, running)


def _check_run(run: TaskRun, running: bool) -> None:
    where = f"task {run.alias} of {run.swarm.swarm_id} in iteration {run.iteration}"
    outcomes = [s.outcome for s in run.slots]
    counts = (
        outcomes.count(None),
        outcomes.count(SlotOutcome.SUCCEEDED),
        outcomes.count(SlotOutcome.FAILED),
        outcomes.count(SlotOutcome.CANCELLED),
    )
    if counts != (run.open, run.successes, run.failed, run.cancelled):
        raise _broken(f"{where}: counters {run.open, run.successes, run.failed} != {counts}")
    for slot in run.slots:
        cur = slot.current
        if cur is None and slot.planned is not None:
            # A chain/ring slot not scheduled yet, or skipped because its node was gone.
            if slot.outcome not in (None, SlotOutcome.FAILED, SlotOutcome.CANCELLED):
                raise _broken(f"{where}: unscheduled slot {slot.index} is {slot.outcome}")
            continue
        if cur is None or cur.slot is not slot or cur.node_id not in slot.tried:
            raise _broken(f"{where}: slot {slot.index} has no consistent current instance")
        expected = None if cur.state not in TERMINAL else SlotOutcome(cur.state.value)
        if slot.outcome is not expected:
            raise _broken(f"{where}: slot {slot.index} is {slot.outcome} but {cur.state.value}")
    if running and run.successes + run.open < run.min_results:
        raise _broken(f"{where} cannot reach min_results but the swarm still runs")
    if running and run.ended != (run.open == 0):
        raise _broken(f"{where}: ended flag is wrong")
    if running and run.open == 0 and not run.released:
        raise _broken(f"{where} finished without releasing its downstream tasks")
