"""The world service as the coordinator runs it: store-backed, no ``local.*`` ops.

Reuses :class:`shoal._world.service.WorldService` (the simulator's service), so task
code sees one set of semantics. Only ``local.*`` differs: the node agent answers those
itself, and the coordinator never knows a node's data paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shoal._coord.access import BlobAccess
from shoal._errors import ShoalError
from shoal._runtime import ops
from shoal._store.base import Store
from shoal._world.service import InstanceInfo, Invoker, NodeInfo, WorldService


def _local_refused() -> ShoalError:
    return ShoalError(
        "local.* operations are answered by the node agent, not the coordinator",
        code="world.local",
        hint="this is a bug in the node agent: it must not forward local.* requests",
    )


class _NoNodes(Mapping[str, NodeInfo]):
    """The coordinator knows no node's datasets."""

    def __getitem__(self, node_id: str) -> NodeInfo:
        raise _local_refused()

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class CoordWorld(WorldService):
    """Answers the world operations of instances running on real nodes.

    Blob wires are checked and recorded on their way in and out (:mod:`shoal._coord.access`):
    a value may name only a blob its node holds (it uploaded or was given the bytes),
    and then belongs to the instance's swarm; every blob an answer hands an instance is
    granted to its node before the answer leaves, so the node may then download it.
    """

    def __init__(
        self,
        store: Store,
        on_stop: Callable[[InstanceInfo], None],
        on_next_iter: Callable[[InstanceInfo, str, tuple[str, ...]], None],
        clock: Callable[[], float] = time.time,
        access: BlobAccess | None = None,
        invoker: Invoker | None = None,
    ) -> None:
        super().__init__(store, _NoNodes(), on_stop, on_next_iter, clock, invoker)
        self.access = access or BlobAccess(store, lambda node_id, digest: False)

    def handle(self, info: InstanceInfo, op: str, args: Mapping[str, Any]) -> Any:
        """Run one request; raise ShoalError for anything the task did wrong."""
        row = ops.find(op)
        if row is not None and row.local:
            raise _local_refused()
        if row is not None and row.value:
            wire = args.get("value")
            if isinstance(wire, dict) and isinstance(wire.get("blob"), str):
                self.access.sent(
                    info.node_id, info.swarm_id, wire["blob"], int(wire.get("length", 0))
                )
            elif isinstance(wire, dict) and isinstance(data := wire.get("inline"), bytes):
                self.access.kept_inline(info.node_id, info.swarm_id, data)
        answer = super().handle(info, op, args)
        if row is not None and row.reply is not ops.Reply.PLAIN:
            self.access.given(info.node_id, info.swarm_id, row.reply, answer)
        return answer
