"""The agent's side of an instance's world calls.

``local.*`` is answered here from the node's config (the coordinator never learns data
paths); everything else is forwarded to ``POST /v1/world``. Values cross as wires:
a task writes a large value into its outbox and sends a ``file`` wire, which is uploaded
as a blob and forwarded as a ``blob`` wire; a ``blob`` wire coming back is fetched into
the blob cache and handed to the task as a ``file`` wire.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError
from shoal._node.cache import Caches
from shoal._node.client import CoordinatorClient
from shoal._runtime.protocol import raise_payload

Wire = dict[str, Any]
_NUMBERED = ("log", "metric")


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


@dataclass
class InstanceScope:
    """What one instance may touch through the proxy.

    Attributes
    ----------
    instance_id, node_id
        Who is calling.
    datasets
        The datasets its module declared (name -> path on this node).
    outbox
        The only folder its ``file`` wires may point into (a resolved path).
    """

    instance_id: str
    node_id: str
    datasets: dict[str, Path]
    outbox: Path
    resources: dict[str, int] = field(default_factory=dict)
    notes: int = 0  # log and metric records numbered so far
    # Numbers start at a random multiple of 2**32: an instance that runs again (its
    # agent restarted and was offered it again) is not taken for a repeat of the first.
    first_number: int = field(default_factory=lambda: secrets.randbits(30) << 32)

    def number(self, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` of a log or metric record with its number ``n`` in this run of the
        instance (a request sent again carries the same numbers)."""
        self.notes += 1
        return {**args, "n": self.first_number + self.notes - 1}


class WorldProxy:
    """Answers or forwards the world requests of every instance on this node."""

    def __init__(self, client: CoordinatorClient, caches: Caches, gpu: bool) -> None:
        self._client = client
        self._caches = caches
        self._resources = {"cpu": os.cpu_count() or 1, "memory": _memory(), "gpu": int(gpu)}

    def handle(self, scope: InstanceScope, op: str, args: dict[str, Any]) -> Any:
        """The answer to one request; raises ShoalError for the task to see."""
        if op == "local.dataset":
            return self._dataset(scope, str(args.get("name")))
        if op == "local.resources":
            return dict(self._resources)
        if "value" in args:
            args = {**args, "value": self._outgoing(scope, args["value"])}
        # Numbered, so a record sent again after its answer was lost is stored once.
        if op in _NUMBERED:
            args = scope.number(args)
        elif op == "batch":
            calls = [{**c, "args": scope.number(c.get("args") or {})} for c in args["calls"]]
            args = {**args, "calls": calls}
        reply = self._client.world(scope.instance_id, op, args)
        if "error" in reply:
            raise_payload(reply["error"])
        return self._incoming(op, reply.get("ok"))

    def _dataset(self, scope: InstanceScope, name: str) -> str:
        path = scope.datasets.get(name)
        if path is None:
            mapped = ", ".join(sorted(scope.datasets)) or "none"
            raise ShoalError(
                f"node {scope.node_id!r} gives this task no dataset {name!r} "
                f"(it may read: {mapped})",
                code="local.dataset",
                hint="list the dataset in Module(datasets=[...]) so the task is placed on "
                "nodes that have it and may read it there",
            )
        return str(path)

    # -------------------------------------------------------------------- wires
    def _outgoing(self, scope: InstanceScope, wire: Any) -> Any:
        if not isinstance(wire, dict) or "file" not in wire:
            return wire
        path = Path(os.path.realpath(str(wire["file"])))
        # A task may only publish what it wrote into its own outbox, never another
        # file the agent can read (its credential, another site's data, ...).
        # scope.outbox was resolved before the task started, so replacing the folder
        # with a symlink does not move it.
        if path.parent != scope.outbox:
            raise ShoalError(
                "a value refers to a file outside the task's outbox",
                code="world.wire",
                hint="pass values through the shoal runtime API",
            )
        offset, length = int(wire["offset"]), int(wire["length"])
        digest = self._caches.publish(path, offset, length)
        return {"blob": digest, "length": length}

    def _local(self, wire: Any) -> Any:
        if isinstance(wire, dict) and "blob" in wire:
            path = self._caches.blob(str(wire["blob"]))
            return {"file": str(path), "offset": 0, "length": int(wire["length"])}
        return wire

    def _incoming(self, op: str, value: Any) -> Any:
        if op == "globals.get" and isinstance(value, dict) and "value" in value:
            return {**value, "value": self._local(value["value"])}
        if op == "results.list" and isinstance(value, list):
            return [{**r, "value": self._local(r["value"])} for r in value]
        if op == "state.get":
            return self._local(value)
        return value
