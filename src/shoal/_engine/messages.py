"""Events into the engine and instructions out of it.

Every event carries ``now`` (seconds on the driver's clock) and receives a cause id
(``event_id``) from the engine; every instruction names the event that caused it.
All fields are plain data so drivers can log, persist and replay them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from shoal._engine.capacity import Capacity
from shoal._plan import Plan


class FailureKind(str, Enum):
    """Why an instance failed."""

    ERROR = "error"  # the task raised
    CRASH = "crash"  # the process running it died
    TIMEOUT = "timeout"  # it exceeded the task's timeout (engine-decided)
    LOST = "lost"  # its node left or stopped heartbeating (engine-decided)
    CANCELLED = "cancelled"  # not a failure of the task: the swarm ended around it


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class NodeJoined:
    """A node connected (or reconnected) and says what it offers."""

    node_id: str
    now: float
    datasets: frozenset[str] = frozenset()
    gpu: bool = False
    images: frozenset[str] | None = None  # None: accepts every image (simulator)
    capacity: Capacity | None = None  # None: resources are not checked (simulator)


@dataclass(frozen=True)
class NodeLost:
    """A node left or its heartbeat timed out; its running instances are lost."""

    node_id: str
    now: float
    reason: str = "node left"


@dataclass(frozen=True)
class NodeRestarted:
    """A node's agent restarted: the instances it ran are lost, but the node is
    connected, so a retry may run on it again (``method="all"`` retries in place)."""

    node_id: str
    now: float
    reason: str = "the node agent restarted"


@dataclass(frozen=True)
class SwarmSubmitted:
    """A user submitted a plan.

    ``task_timeout_s`` is the timeout of every task of the swarm declared with
    ``timeout=None``; None means the engine's finite default
    (:data:`~shoal._engine.timers.DEFAULT_TASK_TIMEOUT_S`).
    """

    swarm_id: str
    plan: Plan
    now: float
    seed: int = 0
    task_timeout_s: float | None = None


@dataclass(frozen=True)
class InstanceStarted:
    """The node began running the instance."""

    instance_id: str
    now: float


@dataclass(frozen=True)
class InstanceSucceeded:
    """The instance's ``run()`` returned; its results are stored.

    ``loop_value``: for an instance of an inner loop whose ``until`` condition names a
    result, the number the driver read from that result (None: none, or not a number).
    The engine evaluates the condition on it (docs/engine.md, "Inner loops").
    """

    instance_id: str
    now: float
    loop_value: float | None = None


@dataclass(frozen=True)
class InstanceFailed:
    """The instance raised or its process crashed."""

    instance_id: str
    now: float
    error: str
    traceback: str = ""
    kind: FailureKind = FailureKind.ERROR


@dataclass(frozen=True)
class StopSwarmCalled:
    """Task code called ``world.stop_swarm()``: the swarm ends after this iteration."""

    instance_id: str
    now: float


@dataclass(frozen=True)
class NextIterScheduled:
    """Task code called ``world.schedule_next_iter(node_ids, alias)``."""

    instance_id: str
    now: float
    alias: str
    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class InvokeCalled:
    """Task code called ``world.invoke(alias, ...)``: run the on-demand task ``alias``.

    ``call_id`` is ``f"{instance_id}#{n}"`` (n counts the caller's calls from 0);
    ``node_ids`` restricts the nodes (None: the task's own placement); ``min_results``
    None means every placed instance; ``timeout_s`` None means the task's timeout times
    ``retries + 1`` plus the placement timeout.
    """

    instance_id: str
    now: float
    call_id: str
    alias: str
    node_ids: tuple[str, ...] | None = None
    min_results: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class StopRequested:
    """A user asked to stop the swarm now: running instances are cancelled."""

    swarm_id: str
    now: float
    reason: str = "stopped by user"


@dataclass(frozen=True)
class TimerFired:
    """The driver's clock reached a time the engine asked to be woken at."""

    now: float


Event = (
    NodeJoined
    | NodeLost
    | NodeRestarted
    | SwarmSubmitted
    | InstanceStarted
    | InstanceSucceeded
    | InstanceFailed
    | StopSwarmCalled
    | NextIterScheduled
    | StopRequested
    | TimerFired
    | InvokeCalled
)


# ----------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class RunInstance:
    """Run one instance of a task on a node.

    ``inputs`` maps each direct upstream alias to the instance ids whose results the
    instance may see (for ``Condition.RESULT`` only those done when it was started).
    """

    cause: int
    swarm_id: str
    instance_id: str
    node_id: str
    alias: str
    iteration: int
    attempt: int
    module: str
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    timeout_s: float | None = None
    invoke: str | None = None  # the call id, for an instance run by world.invoke
    loop_pass: int | None = None  # the pass of its inner loop (None: not in a loop)


@dataclass(frozen=True)
class CancelInstance:
    """Stop a running instance; its outcome no longer matters."""

    cause: int
    swarm_id: str
    instance_id: str
    node_id: str
    reason: str


@dataclass(frozen=True)
class IterationStarted:
    """Iteration ``iteration`` (0-based) of a swarm begins."""

    cause: int
    swarm_id: str
    iteration: int


@dataclass(frozen=True)
class InstanceFailure:
    """One failed instance, as carried by :class:`SwarmFinished`."""

    instance_id: str
    alias: str
    node_id: str
    iteration: int
    attempt: int
    kind: FailureKind
    error: str
    traceback: str


@dataclass(frozen=True)
class SwarmFinished:
    """The swarm ended: ``succeeded``, ``failed`` or ``stopped``."""

    cause: int
    swarm_id: str
    status: str
    iterations: int
    reason: str
    failures: tuple[InstanceFailure, ...] = ()


@dataclass(frozen=True)
class InvokeFinished:
    """A ``world.invoke`` call ended: answer the caller's blocked call.

    ``results`` maps node id -> succeeded instance id (read their values);
    ``status`` is ``"succeeded"`` or ``"failed"`` (raise with ``failures``).
    """

    cause: int
    swarm_id: str
    call_id: str
    caller_instance_id: str
    status: str
    results: dict[str, str]
    reason: str
    failures: tuple[InstanceFailure, ...] = ()


@dataclass(frozen=True)
class WakeAt:
    """Send :class:`TimerFired` when the clock reaches ``at`` (replaces earlier WakeAt)."""

    cause: int
    at: float


Instruction = (
    RunInstance | CancelInstance | IterationStarted | SwarmFinished | WakeAt | InvokeFinished
)
