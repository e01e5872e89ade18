"""Typed records of swarms, failures, logs, metrics and nodes.

What :class:`shoal.Client` returns (decoded from the coordinator's JSON, whose shape they
describe field for field) and what :class:`shoal.SimulationRun` returns for the same
things. Frozen dataclasses: attribute access, a readable ``repr``, and
:meth:`~Record.to_dict` for the JSON form.
"""

# No `from __future__ import annotations` here: pydantic (the coordinator's response
# models) reads these annotations, and as strings they would be resolved in the module
# the class claims, which is `shoal` once published (see shoal._public).
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shoal._engine.messages import InstanceFailure
    from shoal._plan import ModuleRef, Plan

#: Final swarm statuses: a swarm in one of these never changes again.
TERMINAL = frozenset({"succeeded", "failed", "stopped"})


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Record:
    """Base of the records: :meth:`to_dict`."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON data (the coordinator's JSON for it): nested records as
        dicts, tuples as lists."""
        out: dict[str, Any] = _plain(self)
        return out


@dataclass(frozen=True)
class TaskCounts(Record):
    """Instances of one task in the current iteration, by state, and the module it runs
    (``module``: its name, ``version``: its version or None)."""

    scheduled: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    module: str = ""
    version: str | None = None


@dataclass(frozen=True)
class FailureRecord(Record):
    """One failed instance: where it ran, why it failed, and its traceback.

    Attributes
    ----------
    kind
        ``"error"`` (the task raised), ``"crash"`` (its process died), ``"timeout"``,
        ``"lost"`` (its node was lost) or ``"cancelled"``.
    """

    instance_id: str
    alias: str
    node_id: str
    iteration: int
    attempt: int
    kind: str
    error: str
    traceback: str = field(default="", repr=False)


@dataclass(frozen=True)
class SwarmSummary(Record):
    """One swarm, as listed by :meth:`shoal.Client.swarms`.

    Attributes
    ----------
    status
        ``"running"``, ``"succeeded"``, ``"failed"`` or ``"stopped"``.
    iteration
        The current (or last) iteration; -1 before the first.
    reason
        Why the swarm ended (empty while it runs).
    created
        When it was submitted (epoch seconds).
    """

    swarm_id: str
    name: str
    status: str
    iteration: int
    reason: str
    created: float

    @property
    def finished(self) -> bool:
        """Whether the status is final (``succeeded``, ``failed`` or ``stopped``)."""
        return self.status in TERMINAL


@dataclass(frozen=True)
class InstanceRecord(Record):
    """A live instance: where it runs and since when (epoch seconds: when it started,
    or when it was scheduled if it has not started yet)."""

    instance_id: str
    alias: str
    node_id: str
    iteration: int
    attempt: int
    state: str
    since: float
    timeout_s: float | None = None


@dataclass(frozen=True)
class SwarmStatus(SwarmSummary):
    """One swarm's status, as :meth:`shoal.Client.status` returns it.

    Attributes
    ----------
    failures
        Every failed instance with its node id and traceback.
    tasks
        ``{alias: TaskCounts}`` of the current iteration.
    waiting
        ``{alias: why}`` for each task that waits for an eligible node: the nodes each
        constraint excludes (a missing dataset or image, a resource shortfall).
    running
        The live instances that have been at it longest (at most
        ``RUNNING_SHOWN``, oldest first), with their node: who a stuck run waits for.
    """

    failures: tuple[FailureRecord, ...] = ()
    tasks: Mapping[str, TaskCounts] = field(default_factory=dict)
    waiting: Mapping[str, str] = field(default_factory=dict)
    running: tuple[InstanceRecord, ...] = ()


#: How many live instances a status lists (the counts cover the rest).
RUNNING_SHOWN = 10


@dataclass(frozen=True)
class LogRecord(Record):
    """One log record (``seq`` increases in the order records were stored)."""

    seq: int
    node_id: str
    alias: str
    iteration: int
    instance_id: str
    level: str
    message: str
    time: float
    module: str = ""  # the module the task runs, and its version (from the plan)
    version: str | None = None


@dataclass(frozen=True)
class MetricRecord(Record):
    """One metric value (``step`` defaults to the iteration)."""

    name: str
    value: float
    step: int
    node_id: str
    alias: str
    iteration: int
    time: float


@dataclass(frozen=True)
class NodeRecord(Record):
    """A node the coordinator knows.

    Attributes
    ----------
    images
        The images it offers (None: it did not say, any image).
    last_seen
        When the coordinator last heard of it (epoch seconds).
    running
        How many instances it runs now.
    cpu, memory, gpus, gpu_memory
        What it advertised for one instance: cores, bytes, GPUs detected and bytes of
        its largest GPU (None: not advertised).
    """

    node_id: str
    connected: bool
    datasets: tuple[str, ...]
    gpu: bool
    images: tuple[str, ...] | None
    last_seen: float
    running: int
    cpu: float | None = None
    memory: int | None = None
    gpus: int | None = None
    gpu_memory: int | None = None


# --------------------------------------------------------------- from drivers' rows


class _LogRow(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def node_id(self) -> str: ...
    @property
    def alias(self) -> str: ...
    @property
    def iteration(self) -> int: ...
    @property
    def instance_id(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def time(self) -> float: ...


class _MetricRow(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def step(self) -> int: ...
    @property
    def node_id(self) -> str: ...
    @property
    def alias(self) -> str: ...
    @property
    def iteration(self) -> int: ...
    @property
    def time(self) -> float: ...


def log_record(row: _LogRow, plan: "Plan | None" = None) -> LogRecord:
    """The record of a stored log row; with ``plan``, it names the task's module and
    version."""
    ref = _module_of(plan, row.alias)
    return LogRecord(
        row.seq,
        row.node_id,
        row.alias,
        row.iteration,
        row.instance_id,
        row.level,
        row.message,
        row.time,
        module="" if ref is None else ref.name,
        version=None if ref is None else ref.version,
    )


def _module_of(plan: "Plan | None", alias: str) -> "ModuleRef | None":
    try:
        return None if plan is None else plan.module_of(alias)
    except KeyError:
        return None


def metric_record(row: _MetricRow) -> MetricRecord:
    """The record of a stored metric row."""
    return MetricRecord(
        row.name, row.value, row.step, row.node_id, row.alias, row.iteration, row.time
    )


def failure_record(f: "InstanceFailure") -> FailureRecord:
    """The record of a failure the engine reports."""
    return FailureRecord(
        f.instance_id,
        f.alias,
        f.node_id,
        f.iteration,
        f.attempt,
        f.kind.value,
        f.error,
        f.traceback,
    )
