"""Read-only snapshots of engine state for drivers (status pages, CLI, stores)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal._engine.messages import FailureKind, InstanceFailure
from shoal._engine.state import Instance, InstanceState, SwarmState
from shoal._plan import Plan


@dataclass(frozen=True)
class SwarmView:
    """A swarm as the engine sees it.

    Attributes
    ----------
    swarm_id
        The swarm's id.
    status
        ``"running"``, ``"succeeded"``, ``"failed"`` or ``"stopped"``.
    iteration
        The current (latest started) iteration, 0-based; -1 if none started.
    plan
        The submitted plan.
    failures
        Every failed instance so far (tolerated ones included), oldest first.
    reason
        Why the swarm finished; empty while it runs.
    """

    swarm_id: str
    status: str
    iteration: int
    plan: Plan
    failures: tuple[InstanceFailure, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class InstanceView:
    """One instance as the engine sees it.

    Attributes
    ----------
    instance_id
        ``"{swarm_id}/{iteration}/{alias}/{slot}/{attempt}"``.
    swarm_id, alias, node_id, iteration, slot, attempt
        Where and what it is.
    state
        Its :class:`InstanceState`.
    inputs
        Upstream alias -> instance ids whose results it may see.
    kind, error
        Why it failed or was cancelled; ``None`` and ``""`` otherwise.
    """

    instance_id: str
    swarm_id: str
    alias: str
    node_id: str
    iteration: int
    slot: int
    attempt: int
    state: InstanceState
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kind: FailureKind | None = None
    error: str = ""


def failure_of(inst: Instance) -> InstanceFailure:
    """The :class:`InstanceFailure` record of a failed instance."""
    assert inst.kind is not None
    return InstanceFailure(
        instance_id=inst.instance_id,
        alias=inst.run.alias,
        node_id=inst.node_id,
        iteration=inst.run.iteration,
        attempt=inst.attempt,
        kind=inst.kind,
        error=inst.error,
        traceback=inst.traceback,
    )


def swarm_view(swarm: SwarmState) -> SwarmView:
    """Snapshot of ``swarm``."""
    return SwarmView(
        swarm_id=swarm.swarm_id,
        status=swarm.status.value,
        iteration=swarm.iteration,
        plan=swarm.plan,
        failures=tuple(failure_of(i) for i in swarm.failed),
        reason=swarm.reason,
    )


def instance_view(inst: Instance) -> InstanceView:
    """Snapshot of ``inst``."""
    return InstanceView(
        instance_id=inst.instance_id,
        swarm_id=inst.run.swarm.swarm_id,
        alias=inst.run.alias,
        node_id=inst.node_id,
        iteration=inst.run.iteration,
        slot=inst.slot.index,
        attempt=inst.attempt,
        state=inst.state,
        inputs=dict(inst.inputs),
        kind=inst.kind,
        error=inst.error,
    )


def format_story(inst: Instance) -> list[str]:
    """The story of ``inst``, one line per transition."""
    return [f"t={now:g} #{cause} {event}: {detail}" for now, cause, event, detail in inst.story]
