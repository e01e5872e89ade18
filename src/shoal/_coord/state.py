"""The coordinator driver's bookkeeping records."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shoal._world.service import InstanceInfo


def hash_credential(credential: str) -> str:
    """What the store keeps of a node credential."""
    return "sha256:" + hashlib.sha256(credential.encode()).hexdigest()


@dataclass
class Live:
    """A non-terminal instance: what its node and the world service need."""

    info: InstanceInfo
    attempt: int
    module: str
    timeout_s: float | None
    started: bool = False


@dataclass
class Offer:
    """What a node offers the engine."""

    datasets: frozenset[str] = frozenset()
    gpu: bool = False
    images: frozenset[str] | None = None


@dataclass
class NodeState:
    """The driver's view of a node."""

    node_id: str
    offer: Offer | None = None  # None: not heard yet in this process or the log
    joined: bool = False  # connected, as far as the engine knows
    last_seen: float = 0.0
    stored_seen: float = 0.0
    session: str | None = None


@dataclass
class Counts:
    """Instances of one task in one iteration."""

    scheduled: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
