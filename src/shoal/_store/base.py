"""The store contract: what every backend (memory, SQLite, PostgreSQL) provides.

One written contract, one shared test suite (tests/store/) run against every backend.
Values are *wire values* (:data:`shoal._wire.Wire`): ``{"inline": bytes}`` or a
reference the backend does not interpret (``{"blob": digest, "length": n}`` in the
coordinator, ``{"file": ..., "offset": ..., "length": ...}`` in the simulator). A store
never decodes a value.

Durability: a method that returns has made its write durable (SQL: committed).
Idempotence: ``result_add`` replaces the result with the same (instance, tag);
``node_upsert``, ``join_token_put`` and ``swarm_update`` overwrite; ``log_add`` and
``metric_add`` ignore a record whose (instance, ``ordinal``) is stored already (a node
agent gives each record of an instance its own number, so an upload sent again after its
answer was lost counts once); ``event_append`` is not idempotent (the coordinator
appends each engine event once, in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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

    ``credential_hash`` is a hash of the node's secret (never the secret itself); empty
    when the node has no valid credential (revoked, or reset by the operator).
    ``revoked`` is when the operator revoked the node (None: not revoked): a revoked
    node id is not free for the next enrolment, a reset one (empty hash, not revoked)
    is.
    """

    node_id: str
    credential_hash: str
    datasets: tuple[str, ...] = ()
    gpu: bool = False
    images: tuple[str, ...] | None = None
    last_seen: float = 0.0
    connected: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    revoked: float | None = None


@dataclass(frozen=True)
class JoinTokenRecord:
    """A join token nodes enrol with. The store keeps a hash of its secret, never the
    secret itself.

    Attributes
    ----------
    token_id
        Its public name (``default`` for the token in the coordinator's state folder).
    token_hash
        ``sha256:<hex>`` of the secret; unique.
    created
        When it was made (wall-clock seconds).
    expires
        When it stops working (None: never).
    max_uses
        How many enrolments it allows (None: any number).
    uses
        How many enrolments it was used for.
    node_id
        The only node id it enrols (None: any). A token bound to a node id may also
        re-enrol that node when it is known already: the operator's way of replacing a
        node that lost its credential.
    revoked
        When it was revoked (None: not revoked).
    """

    token_id: str
    token_hash: str
    created: float
    expires: float | None = None
    max_uses: int | None = None
    uses: int = 0
    node_id: str | None = None
    revoked: float | None = None

    def state(self, now: float) -> str:
        """``"active"``, ``"revoked"``, ``"expired"`` or ``"used up"`` at ``now``."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used up"
        return "active"


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

    # ------------------------------------------------------------ join tokens
    def join_token_put(self, token: JoinTokenRecord) -> None:
        """Create or replace a join token (by ``token_id``)."""
        ...

    def join_token_get(self, token_id: str) -> JoinTokenRecord | None:
        """A join token by id, or None."""
        ...

    def join_token_find(self, token_hash: str) -> JoinTokenRecord | None:
        """The join token whose secret hashes to ``token_hash``, or None."""
        ...

    def join_tokens(self) -> list[JoinTokenRecord]:
        """Every join token, oldest first (ties: by id)."""
        ...

    def join_token_use(self, token_id: str, now: float) -> bool:
        """Count one use of a token if it is usable at ``now`` (not revoked, not
        expired, uses left), atomically: of concurrent calls on a token with one use
        left, one returns True. False if it is not usable or unknown."""
        ...

    def join_token_revoke(self, token_id: str, now: float) -> bool:
        """Revoke a token (a revoked one keeps its first revocation time); False if
        no token has this id."""
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
    def event_append(self, *payloads: bytes) -> int:
        """Append encoded engine events, in order and in one transaction; returns the
        last one's sequence number (1, 2, ...)."""
        ...

    def events(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """Events with a sequence number greater than ``after``, in order.

        The numbers are contiguous: ``after + 1``, ``after + 2``, ... A log with a
        number missing raises ``ShoalError`` code ``store.event_gap`` when the
        iteration reaches the gap (see :func:`contiguous`).
        """
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
    def blob_claim(self, digest: str, swarm_id: str, kind: str, length: int = 0) -> None:
        """Record that blob ``digest`` (``length`` bytes) belongs to a swarm, as one of
        :data:`BLOB_KINDS` (idempotent: a repeat keeps the first length; a digest may
        belong to several swarms, and be both kinds)."""
        ...

    def swarm_blob_bytes(self, swarm_id: str) -> int:
        """The bytes of the distinct value blobs claimed by a swarm (its upload quota's
        use)."""
        ...

    def value_claim(self, digest: str, swarm_id: str, length: int, quota: int | None) -> int | None:
        """Claim blob ``digest`` as a ``"value"`` of a swarm unless that would take the
        swarm's :meth:`swarm_blob_bytes` over ``quota`` (``None``: no bound), as one
        atomic step (one round trip to the database; a value the swarm holds already
        costs nothing again). Returns ``None`` when claimed, else the bytes the swarm
        would hold with it (nothing is claimed then)."""
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


def contiguous(
    events: Iterable[tuple[int, bytes]], after: int, where: str
) -> Iterator[tuple[int, bytes]]:
    """Yield ``events`` (numbered from ``after + 1``), checking that no number is missing.

    Replaying a log with a hole would rewrite history (a swarm that had succeeded would
    be replayed without the events that made it succeed), so a gap stops the iteration.

    Parameters
    ----------
    events
        ``(seq, payload)`` pairs in increasing order of ``seq``.
    after
        The number before the first expected one.
    where
        The log's location, for the error message.

    Raises
    ------
    ShoalError
        ``store.event_gap``, naming the first missing number.
    """
    expected = max(after, 0) + 1
    for seq, payload in events:
        if seq != expected:
            raise ShoalError(
                f"the event log in {where} has a gap: event {expected} is missing (the "
                f"next event kept is {seq})",
                code="store.event_gap",
                hint="the database was damaged or edited by hand: stop, and restore it from "
                "a backup. shoal does not replay a log with a gap, because that would "
                "rewrite the history of its swarms",
            )
        yield seq, payload
        expected += 1
