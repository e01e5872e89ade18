"""The store contract: what every backend (memory, SQLite, PostgreSQL) provides.

One written contract, one shared test suite (tests/store/) run against every backend.
Values are *wire values* (:data:`shoal._wire.Wire`): ``{"inline": bytes}`` or a
reference the backend does not interpret (``{"blob": digest, "length": n}`` in the
coordinator, ``{"file": ..., "offset": ..., "length": ...}`` in the simulator). A store
never decodes a value.

Durability: a method that returns has made its write durable (SQL: committed).
Idempotence: ``result_add`` replaces the result with the same (instance, tag);
``node_upsert`` and ``swarm_update`` overwrite; ``log_add`` and ``metric_add`` ignore a
record whose (instance, ``ordinal``) is stored already (a node agent gives each record
of an instance its own number, so an upload sent again after its answer was lost counts
once); ``event_append`` is not idempotent (the coordinator appends each engine event
once, in order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal._errors import ShoalError
from shoal._wire import Wire


@dataclass(frozen=True)
class ResultRow:
    """One stored result."""

    swarm_id: str
    iteration: int
    alias: str
    node_id: str
    instance_id: str
    tag: str
    value: Wire


@dataclass(frozen=True)
class LogRow:
    """One log record. ``seq`` is assigned by the store (increasing per store).

    ``ordinal``: a number the sender gives each log and metric record of an instance,
    unique per instance (None: not numbered, never taken for a duplicate).
    """

    swarm_id: str
    node_id: str
    alias: str
    iteration: int
    instance_id: str
    level: str
    message: str
    time: float
    seq: int = 0
    ordinal: int | None = None


@dataclass(frozen=True)
class MetricRow:
    """One metric value; ``ordinal`` as for :class:`LogRow`."""

    swarm_id: str
    node_id: str
    alias: str
    iteration: int
    instance_id: str
    name: str
    value: float
    step: int
    time: float
    ordinal: int | None = None


@dataclass(frozen=True)
class NodeRecord:
    """A node known to the coordinator.

    ``credential_hash`` is a hash of the node's secret (never the secret itself).
    """

    node_id: str
    credential_hash: str
    datasets: tuple[str, ...] = ()
    gpu: bool = False
    images: tuple[str, ...] | None = None
    last_seen: float = 0.0
    connected: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SwarmRecord:
    """A submitted swarm. ``plan`` is the plan's JSON document."""

    swarm_id: str
    name: str
    plan: str
    owner: str
    created: float
    status: str = "running"
    reason: str = ""
    iteration: int = -1


class Store(Protocol):
    """Everything a driver keeps: nodes, swarms, the engine's event log, globals (with
    per-iteration history), results, per-node state, logs and metrics, and which swarms
    and holders each blob belongs to (the bytes are in a :class:`~shoal._store.blobs.BlobStore`)."""

    # ------------------------------------------------------------------ nodes
    def node_upsert(self, node: NodeRecord) -> None:
        """Create or replace a node."""
        ...

    def node_get(self, node_id: str) -> NodeRecord | None:
        """A node, or None."""
        ...

    def nodes(self) -> list[NodeRecord]:
        """Every node, sorted by id."""
        ...

    # ----------------------------------------------------------------- swarms
    def swarm_create(self, swarm: SwarmRecord) -> None:
        """Record a new swarm (an existing id raises ``ShoalError`` code ``store.exists``)."""
        ...

    def swarm_update(self, swarm_id: str, status: str, reason: str, iteration: int) -> None:
        """Update a swarm's status, reason and current iteration (an unknown id raises
        ``ShoalError`` code ``store.missing``)."""
        ...

    def swarm_get(self, swarm_id: str) -> SwarmRecord | None:
        """A swarm, or None."""
        ...

    def swarms(self) -> list[SwarmRecord]:
        """Every swarm, newest first."""
        ...

    # -------------------------------------------------------------- event log
    def event_append(self, payload: bytes) -> int:
        """Append one encoded engine event; returns its sequence number (1, 2, ...)."""
        ...

    def events(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """Events with a sequence number greater than ``after``, in order."""
        ...

    # ---------------------------------------------------------------- globals
    def global_get(self, swarm_id: str, key: str) -> tuple[str, Wire] | None:
        """Current version and value of a global."""
        ...

    def global_set(self, swarm_id: str, key: str, value: Wire, iteration: int) -> str:
        """Write a global; returns its new version (unique across stores and restarts).
        The history keeps the last value written in each iteration."""
        ...

    def global_keys(self, swarm_id: str) -> list[str]:
        """Every global key of a swarm, sorted."""
        ...

    def global_versions(self, swarm_id: str) -> dict[str, str]:
        """``{key: version}`` of every global of a swarm."""
        ...

    def global_history(self, swarm_id: str, key: str) -> list[tuple[int, Wire]]:
        """``[(iteration, value)]`` in iteration order (-1: the initial value)."""
        ...

    # ---------------------------------------------------------------- results
    def result_add(self, row: ResultRow) -> None:
        """Store a result; replaces one with the same (instance, tag). Ignored if the
        iteration's results were dropped."""
        ...

    def results_of_instances(self, instance_ids: list[str], tag: str) -> list[ResultRow]:
        """Results with ``tag`` of these instances, in the given order."""
        ...

    def results_of_task(
        self, swarm_id: str, iteration: int, alias: str, tag: str
    ) -> list[ResultRow]:
        """Every result with ``tag`` of a task in an iteration, sorted by node id."""
        ...

    def result_tags(self, swarm_id: str, iteration: int, alias: str) -> list[str]:
        """The tags a task stored in an iteration, in first-stored order."""
        ...

    def drop_results(self, swarm_id: str, iteration: int) -> None:
        """Forget every result of an iteration."""
        ...

    def dropped(self, swarm_id: str, iteration: int) -> bool:
        """Whether an iteration's results were dropped."""
        ...

    # ------------------------------------------------------------------ state
    def state_get(self, swarm_id: str, node_id: str, alias: str, key: str) -> Wire | None:
        """Per (swarm, node, alias) state."""
        ...

    def state_set(self, swarm_id: str, node_id: str, alias: str, key: str, value: Wire) -> None:
        """Persist per (swarm, node, alias) state."""
        ...

    # ------------------------------------------------------------------ blobs
    def blob_claim(self, digest: str, swarm_id: str, kind: str) -> None:
        """Record that blob ``digest`` belongs to a swarm, as one of :data:`BLOB_KINDS`
        (idempotent; a digest may belong to several swarms, and be both kinds)."""
        ...

    def blob_claims(self, digest: str) -> list[tuple[str, str]]:
        """``[(swarm_id, kind)]`` of a blob, sorted (empty: it belongs to no swarm)."""
        ...

    def blob_grant(self, digest: str, holder: str, swarm_id: str = "") -> None:
        """Record that ``holder`` (``"node:<id>"``, ``"user"``) has blob ``digest``:
        it was given it under ``swarm_id``, or it uploaded it (``swarm_id`` ``""``).
        Idempotent."""
        ...

    def blob_granted(self, digest: str, holder: str) -> list[str]:
        """The swarm ids under which ``holder`` has the blob, sorted (``""``: it
        uploaded it); empty if it never had it."""
        ...

    # ----------------------------------------------------------- logs, metrics
    def log_add(self, row: LogRow) -> None:
        """Append a log record (its ``seq`` is assigned by the store); ignored if a
        record of the same instance with the same ``ordinal`` is stored."""
        ...

    def logs(
        self,
        swarm_id: str,
        node: str | None = None,
        task: str | None = None,
        level: str | None = None,
        iteration: int | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[LogRow]:
        """Log records with ``seq > after``, filtered, in order."""
        ...

    def metric_add(self, row: MetricRow) -> None:
        """Append a metric value; ignored if a value of the same instance with the same
        ``ordinal`` is stored."""
        ...

    def metrics(
        self,
        swarm_id: str,
        name: str | None = None,
        node: str | None = None,
        task: str | None = None,
    ) -> list[MetricRow]:
        """Metric values, filtered, in the order they were added."""
        ...


#: What a blob is to a swarm: a module bundle or a value (a result, global or state).
BLOB_KINDS = ("bundle", "value")


def check_blob_kind(kind: str) -> None:
    """Raise ``store.blob_kind`` unless ``kind`` is one of :data:`BLOB_KINDS`."""
    if kind not in BLOB_KINDS:
        raise ShoalError(
            f"blob kind {kind!r} is not one of {BLOB_KINDS}",
            code="store.blob_kind",
            hint="claim a blob as a 'bundle' or a 'value'",
        )


def swarm_exists(swarm_id: str) -> ShoalError:
    """The error ``swarm_create`` raises for an id already taken."""
    return ShoalError(
        f"a swarm with id {swarm_id!r} already exists",
        code="store.exists",
        hint="submit the swarm under a new id",
    )


def swarm_missing(swarm_id: str) -> ShoalError:
    """The error ``swarm_update`` raises for an unknown id."""
    return ShoalError(
        f"no swarm with id {swarm_id!r}",
        code="store.missing",
        hint="create the swarm before updating it",
    )
