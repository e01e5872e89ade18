"""The coordinator driver's own records (engine state is only ever read from the engine)."""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

from shoal._engine import InstanceView, NodeView, SwarmView, TaskCounts
from shoal._engine.capacity import Capacity
from shoal._store.base import NodeRecord, SwarmRecord


def hash_credential(credential: str) -> str:
    """What the store keeps of a node credential."""
    return "sha256:" + hashlib.sha256(credential.encode()).hexdigest()


@dataclass(frozen=True)
class Offer:
    """What a node offers the engine."""

    datasets: frozenset[str] = frozenset()
    gpu: bool = False
    images: frozenset[str] | None = None
    capacity: Capacity | None = None


#: Heartbeats remembered per node (at the agent's default 5 s period: the last 10 min).
HEARTBEAT_HISTORY = 120


@dataclass
class NodeState:
    """What only the driver knows of a node: when it was heard from, its agent session,
    whether a full heartbeat checked it since it (re)joined (then a heartbeat with the
    same offer and session takes the fast path), and whether a periodic check of it is
    under way."""

    node_id: str
    last_seen: float = 0.0
    stored_seen: float = 0.0
    session: str | None = None
    checked: bool = False
    checking: bool = False
    #: When its last :data:`HEARTBEAT_HISTORY` heartbeats arrived (epoch seconds,
    #: oldest first): the dashboard's node page draws them. Kept in memory only, like
    #: ``last_seen`` between stores: a restarted coordinator starts a new history.
    beats: deque[float] = field(default_factory=lambda: deque(maxlen=HEARTBEAT_HISTORY))


@dataclass(frozen=True)
class SwarmReport:
    """What ``GET /v1/swarms/{id}`` is built from.

    Attributes
    ----------
    record
        The store's record (name, owner, creation time, last recorded status).
    view
        The engine's view; None when the engine does not host the swarm (it was
        recorded, but the coordinator stopped before the engine saw it).
    counts
        Instance counts per task in the current iteration.
    waiting
        Why each task that waits for a node has none (alias -> the engine's reasons).
    running
        Its live instances scheduled first (oldest first), a few.
    """

    record: SwarmRecord
    view: SwarmView | None
    counts: dict[str, TaskCounts]
    waiting: dict[str, str] = field(default_factory=dict)
    running: tuple[InstanceView, ...] = ()


@dataclass(frozen=True)
class NodeReport:
    """What ``GET /v1/nodes`` is built from, for one node.

    Attributes
    ----------
    record
        The store's record (what the node offered when last stored).
    last_seen
        When this coordinator last heard from it (the record's time if never).
    view
        The engine's view; None if the node never joined since the log began.
    beats
        When its recent heartbeats arrived (epoch seconds, oldest first; at most
        :data:`HEARTBEAT_HISTORY`, since this coordinator started).
    """

    record: NodeRecord
    last_seen: float
    view: NodeView | None
    beats: tuple[float, ...] = ()
