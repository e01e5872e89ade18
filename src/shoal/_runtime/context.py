"""The instance a piece of task code is running as, and its channel to the node."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoal._errors import ShoalError
from shoal._wire import Outbox


class Channel(Protocol):
    """How task code talks to its node: one request/response call and one-way notes."""

    outbox: Outbox | None

    def request(self, op: str, args: Mapping[str, Any]) -> Any:
        """Call ``op`` and return its result, or raise the service's error."""
        ...

    def notify(self, op: str, args: Mapping[str, Any]) -> None:
        """Send a one-way message (logs, metrics)."""
        ...


@dataclass(frozen=True)
class InstanceContext:
    """Identity of the running instance."""

    swarm_id: str
    instance_id: str
    node_id: str
    alias: str
    iteration: int
    attempt: int
    channel: Channel
    # Versions of the swarm's globals when the instance started: a cached global whose
    # version matches needs no request (None: always ask).
    global_versions: dict[str, str] | None = None
    # How many world.invoke calls it made so far (one cell, so the frozen context can
    # count): a call's id is f"{instance_id}#{n}".
    calls: list[int] = field(default_factory=lambda: [0])

    @classmethod
    def from_message(
        cls, c: dict[str, Any], channel: Channel, global_versions: dict[str, str] | None
    ) -> InstanceContext:
        """The context whose identity a node sent in ``c`` (``swarm_id``,
        ``instance_id``, ``node_id``, ``alias``, ``iteration``, ``attempt``)."""
        return cls(
            c["swarm_id"],
            c["instance_id"],
            c["node_id"],
            c["alias"],
            c["iteration"],
            c["attempt"],
            channel,
            global_versions,
        )


_CURRENT: contextvars.ContextVar[InstanceContext | None] = contextvars.ContextVar(
    "shoal_instance", default=None
)


def current() -> InstanceContext:
    """The running instance, or a clear error outside one."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise ShoalError(
            "task code used self.world / self.local / self.logger outside a running instance",
            code="runtime.context",
            hint="run the swarm with shoal.simulate(...) or `shoal simulate`, which call main()",
        )
    return ctx


@contextmanager
def running(ctx: InstanceContext) -> Iterator[None]:
    """Run the body as instance ``ctx``."""
    token = _CURRENT.set(ctx)
    try:
        yield
    finally:
        _CURRENT.reset(token)
