"""The one interface the dashboard's pages read through, and the rows it returns.

Two implementations: the coordinator's (``shoal._coord.dashboard``: its store and
engine views) and a simulator run folder's (:mod:`shoal._ui.folder`). The pages know
nothing else, so the same templates serve a deployment and a simulator run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from shoal._api.records import LogRecord, MetricRecord
from shoal._plan import Plan


@dataclass(frozen=True)
class NodeInfo:
    """One node.

    Attributes
    ----------
    online
        Whether it is connected now (None: a simulator's virtual node, always there).
    last_seen
        When it was last heard from (epoch seconds; None: never, or not known).
    running
        How many instances it runs now.
    facts
        What its record says of it, label -> text (CPUs, memory, GPUs, images, dataset
        names...; never data). A source shows every fact its records have.
    beats
        When its recent heartbeats arrived (epoch seconds, oldest first; empty where
        there are none, as for a simulator's virtual node).
    """

    node_id: str
    online: bool | None
    last_seen: float | None
    running: int = 0
    facts: dict[str, str] = field(default_factory=dict)
    beats: tuple[float, ...] = ()


@dataclass(frozen=True)
class SwarmInfo:
    """One swarm as listed."""

    swarm_id: str
    name: str
    status: str
    iteration: int
    reason: str = ""
    created: float | None = None


@dataclass(frozen=True)
class InstanceRow:
    """One instance of a task: where it ran, how it ended, how long it took."""

    instance_id: str
    alias: str
    node_id: str
    iteration: int
    attempt: int
    state: str
    duration_s: float | None = None


@dataclass(frozen=True)
class FailureRow:
    """One failed instance, with its traceback."""

    swarm_id: str
    instance_id: str
    alias: str
    node_id: str
    iteration: int
    attempt: int
    kind: str
    error: str
    traceback: str = ""


@dataclass(frozen=True)
class IterationRow:
    """One iteration of a swarm on the timeline: its instances by outcome."""

    iteration: int
    scheduled: int
    running: int
    succeeded: int
    failed: int
    current: bool = False


@dataclass(frozen=True)
class SwarmDetail:
    """Everything the swarm page shows but logs and metrics.

    Attributes
    ----------
    plan
        The plan (None: the source does not have it).
    iterations
        The timeline, oldest first.
    instances
        The instances of ``shown_iteration``.
    failures
        Every failure of the swarm, oldest first.
    """

    info: SwarmInfo
    plan: Plan | None
    iterations: list[IterationRow]
    shown_iteration: int
    instances: list[InstanceRow]
    failures: list[FailureRow]


class Source(Protocol):
    """What the dashboard reads. Methods are called in worker threads (they may block
    on a store); :meth:`changed` on the event loop.

    Attributes
    ----------
    kind
        ``"coordinator"`` or ``"simulator"`` (shown in the page header).
    can_stop
        Whether :meth:`stop` does anything (a simulator run cannot be stopped here).
    """

    kind: str
    can_stop: bool

    @property
    def closing(self) -> bool:
        """Whether the server shuts down (live streams end at once)."""
        ...

    def generation(self) -> int:
        """A number that changes whenever anything a page shows may have changed."""
        ...

    async def changed(self, seen: int, timeout: float) -> int:
        """Wait until :meth:`generation` passes ``seen`` or ``timeout`` seconds pass."""
        ...

    def nodes(self) -> list[NodeInfo]:
        """Every node."""
        ...

    def node_instances(self, node_id: str) -> list[InstanceRow]:
        """The node's running and recent instances, newest first."""
        ...

    def swarms(self) -> list[SwarmInfo]:
        """Every swarm, newest first."""
        ...

    def swarm(self, swarm_id: str, iteration: int | None = None) -> SwarmDetail | None:
        """One swarm, its instances shown for ``iteration`` (default: the latest)."""
        ...

    def failures(self, limit: int) -> list[FailureRow]:
        """The most recent failures across swarms, newest first."""
        ...

    def logs(
        self,
        swarm_id: str,
        node: str | None,
        task: str | None,
        level: str | None,
        limit: int,
    ) -> list[LogRecord]:
        """The swarm's last ``limit`` log records that match, oldest first."""
        ...

    def metrics(self, swarm_id: str, name: str | None = None) -> list[MetricRecord]:
        """The swarm's metric values (of one name)."""
        ...

    def story(self, instance_id: str) -> list[str] | None:
        """What happened to an instance; None if unknown."""
        ...

    def stop(self, swarm_id: str) -> None:
        """Stop a running swarm (only when :attr:`can_stop`)."""
        ...


_STORY = re.compile(r"^t=(?P<t>[-+0-9.eE]+) #\d+ (?P<event>\w+): (?P<detail>.*)$")
_ON_NODE = re.compile(r"scheduled on node (?P<node>\S+)")
_TERMINAL = ("succeeded", "failed", "cancelled")


def instance_row(instance_id: str, story: list[str], state: str | None = None) -> InstanceRow:
    """An instance's row from its id (``swarm/iteration/alias/slot/attempt``) and story.

    The engine's story lines (``t=<seconds> #<event> <Event>: <detail>``) carry the
    times: the duration runs from ``started`` to the line that ended it. ``state``
    (from an engine view) wins over what the story's last line says.
    """
    parts = instance_id.rsplit("/", 4)
    # An inner loop's instances write their iteration "<iteration>.<pass>".
    iteration, alias, attempt = int(parts[1].split(".")[0]), parts[2], int(parts[4])
    node, started, ended, last = "", None, None, "scheduled"
    last_t = 0.0
    for line in story:
        m = _STORY.match(line)
        if m is None:
            continue
        t, detail = float(m["t"]), m["detail"]
        if (on := _ON_NODE.search(detail)) is not None:
            node = on["node"].rstrip(",")
        if detail.startswith("started"):
            started, last = t, "running"
        for word in _TERMINAL:
            if detail.startswith(word) and ended is None:
                ended, last = t, word
        last_t = t
    final = state or last
    if ended is None and final in (*_TERMINAL, "timeout", "lost") and story:
        ended = last_t  # ended by the engine (a timeout, a lost node): its last line
    duration = None if started is None or ended is None else max(ended - started, 0.0)
    return InstanceRow(instance_id, alias, node, iteration, attempt, final, duration)
