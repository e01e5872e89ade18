"""Read-only snapshots of engine state for drivers (status pages, CLI, stores)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal._engine.capacity import Capacity
from shoal._engine.messages import FailureKind, InstanceFailure
from shoal._engine.state import TERMINAL, Instance, InstanceState, Node, SwarmState, TaskRun
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
    module
        The plan's key of the module it runs.
    timeout_s
        Its task's timeout, or None.
    inputs
        Upstream alias -> instance ids whose results it may see.
    kind, error
        Why it failed or was cancelled; ``None`` and ``""`` otherwise.
    since
        The time (the events' clock) it started running, or was scheduled if it has
        not started: how long it has been at it, for a display of what runs.
    invoke
        The id of the ``world.invoke`` call it runs for (None: started by the graph).
    """

    instance_id: str
    swarm_id: str
    alias: str
    node_id: str
    iteration: int
    slot: int
    attempt: int
    state: InstanceState
    module: str = ""
    timeout_s: float | None = None
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kind: FailureKind | None = None
    error: str = ""
    since: float = 0.0
    invoke: str | None = None

    @property
    def ended(self) -> bool:
        """Whether it succeeded, failed or was cancelled (no report changes it now)."""
        return self.state in TERMINAL


@dataclass(frozen=True)
class TaskCounts:
    """Instances of one task in one iteration, retries included.

    Attributes
    ----------
    scheduled
        Every instance placed (each retry is one more).
    running
        Started and not ended.
    succeeded, failed
        Ended so; a retried failure counts in ``failed`` too. Cancelled instances are
        only counted in ``scheduled``.
    """

    scheduled: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass(frozen=True)
class NodeView:
    """A node as the engine knows it.

    Attributes
    ----------
    node_id
        Its id.
    connected
        Whether it is connected (joined and not lost since).
    datasets, gpu, images
        What it offered when it last joined (``images`` None: any image).
    running
        Its live (scheduled or running) instances, across swarms.
    capacity
        The CPUs, memory and GPUs it advertised (None: none, resources unchecked).
    """

    node_id: str
    connected: bool
    datasets: frozenset[str]
    gpu: bool
    images: frozenset[str] | None
    running: int
    capacity: Capacity | None = None


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
        module=inst.run.spec.module,
        timeout_s=inst.run.spec.timeout_s
        if inst.run.spec.timeout_s is not None
        else inst.run.swarm.task_timeout_s,
        inputs=dict(inst.inputs),
        kind=inst.kind,
        error=inst.error,
        since=_since(inst),
        invoke=None if inst.run.call is None else inst.run.call.call_id,
    )


def _since(inst: Instance) -> float:
    # From the story (a few lines): the "started" line, else the scheduling line.
    started = next((t for t, _, _, detail in inst.story if detail == "started"), None)
    if started is not None:
        return started
    return inst.story[0][0] if inst.story else 0.0


def format_story(inst: Instance) -> list[str]:
    """The story of ``inst``, one line per transition."""
    return [f"t={now:g} #{cause} {event}: {detail}" for now, cause, event, detail in inst.story]


def task_counts(run: TaskRun) -> TaskCounts:
    """Counts of ``run``'s instances. A slot's earlier attempts all failed (a slot is
    retried only after a failure), so its current instance tells its whole history."""
    scheduled = running = failed = 0
    for slot in run.slots:
        inst = slot.current
        if inst is None:
            continue
        scheduled += inst.attempt + 1
        failed += inst.attempt + (inst.state is InstanceState.FAILED)
        running += inst.state is InstanceState.RUNNING
    return TaskCounts(scheduled, running, run.successes, failed)


def node_view(node: Node) -> NodeView:
    """Snapshot of ``node``."""
    return NodeView(
        node.node_id,
        node.connected,
        node.datasets,
        node.gpu,
        node.images,
        len(node.active),
        node.capacity,
    )
