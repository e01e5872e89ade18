"""The agent's side of an instance's world calls.

Operations the table (:mod:`shoal._runtime.ops`) marks ``local`` are answered here from
the node's config (the coordinator never learns data paths); everything else is
forwarded to ``POST /v1/world``. Values cross as wires:
a task writes a large value into its outbox and sends a ``file`` wire, which is uploaded
as a blob and forwarded as a ``blob`` wire; a ``blob`` wire coming back is fetched into
the blob cache and handed to the task as a ``file`` wire.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError
from shoal._node.cache import Caches
from shoal._node.client import CoordinatorClient, file_chunks
from shoal._node.facts import Gpu, LinkStats, cpu_count, memory_total, performance
from shoal._privacy.accounting import Charge
from shoal._privacy.ledger import Ledger
from shoal._runtime import ops
from shoal._runtime.protocol import raise_payload
from shoal._wire import FileWire, Wire

# A value the task wrote to its outbox goes to the coordinator inline (stored in its
# database, answered inline) up to this size; larger ones as blobs. A value of this
# size costs less in one request than a blob upload and a download (two more round
# trips, two fsyncs and the blob's access records).
NET_INLINE_MAX = 1 << 20


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
    view
        Its own folder of the values it was given (``Caches.view``): the only blobs it
        sees, bound read-only into its sandbox. None: it may be handed no blob.
    """

    instance_id: str
    node_id: str
    datasets: dict[str, Path]
    outbox: Path
    view: Path | None = None
    resources: dict[str, int] = field(default_factory=dict)
    notes: int = 0  # log and metric records numbered so far
    # Numbers start at a random multiple of 2**32: an instance that runs again (its
    # agent restarted and was offered it again) is not taken for a repeat of the first.
    first_number: int = field(default_factory=lambda: secrets.randbits(30) << 32)

    def number(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` of a log or metric record with its number ``n`` in this run of the
        instance (a request sent again carries the same numbers)."""
        self.notes += 1
        return {**args, "n": self.first_number + self.notes - 1}


class WorldProxy:
    """Answers or forwards the world requests of every instance on this node."""

    def __init__(
        self,
        client: CoordinatorClient,
        caches: Caches,
        gpu: bool | list[Gpu],
        link: LinkStats | None = None,
        ledger: Ledger | None = None,
        secret_key: bytes | None = None,
    ) -> None:
        self._client = client
        self._caches = caches
        gpus = gpu if isinstance(gpu, list) else [Gpu("", None)] * int(gpu)
        self._resources = {
            "cpu": cpu_count(),
            "memory": memory_total(),
            "gpu": len(gpus),
            "gpu_memory": max((g.memory or 0 for g in gpus), default=0),
        }
        self._link = link or LinkStats()
        # The node's privacy budgets (node.toml [privacy]); none: no dataset is limited.
        self._ledger = ledger or Ledger({})
        # The key local.secret derives per-swarm secrets from (never sent anywhere).
        self._secret_key = secret_key or secrets.token_bytes(32)
        # The operations this node answers itself: one handler per local row.
        self._answers: dict[str, Callable[[InstanceScope, Mapping[str, Any]], Any]] = {
            ops.LOCAL_DATASET.name: lambda scope, args: self._dataset(scope, str(args.get("name"))),
            ops.LOCAL_RESOURCES.name: lambda scope, args: dict(self._resources),
            ops.LOCAL_PERFORMANCE.name: lambda scope, args: performance(),
            ops.LOCAL_NETWORK.name: lambda scope, args: self._link.quality(),
            ops.LOCAL_PRIVACY.name: self._privacy,
            ops.LOCAL_SECRET.name: self._secret,
        }
        ops.check_handlers(self._answers, type(self).__name__, ops.names(local=True))

    def handle(self, scope: InstanceScope, op: str, args: Mapping[str, Any]) -> Any:
        """The answer to one request (or :data:`~shoal._runtime.ops.BATCH` of batched
        ones); raises ShoalError for the task to see."""
        if op == ops.BATCH:
            # Numbered, so a batch sent again after its answer was lost is stored once.
            calls = [
                {**c, "args": self.prepare(scope, c["op"], c.get("args") or {})}
                for c in args["calls"]
            ]
            return self._forward(scope, op, {**args, "calls": calls}, ops.Reply.PLAIN)
        row = ops.find(op)
        if row is None:
            raise ops.unknown(op)
        if row.local:
            return self._answers[op](scope, args)
        return self._forward(scope, op, self.prepare(scope, op, args), row.reply)

    def send_prepared(self, scope: InstanceScope, op: str, args: dict[str, Any]) -> Any:
        """Forward a call made ready by :meth:`prepare`; raises as :meth:`handle`."""
        return self._forward(scope, op, args, ops.Reply.PLAIN)

    def prepare(self, scope: InstanceScope, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` as the coordinator takes them: a value the task wrote to a file
        uploaded as a blob (or read, to go inline); a record numbered, so one sent again
        is stored once. The agent prepares a call it holds back at once, while the
        task's file is sure to be there (:meth:`send_prepared` sends it later)."""
        row = ops.find(op)
        if row is None or row.local:
            raise ops.unknown(op)
        out = dict(args)
        if row.value and "value" in out:
            out["value"] = self._outgoing(scope, out["value"])
        return scope.number(out) if row.numbered else out

    def _forward(
        self, scope: InstanceScope, op: str, args: dict[str, Any], reply: ops.Reply
    ) -> Any:
        answer = self._client.world(scope.instance_id, op, args)
        if "error" in answer:
            raise_payload(answer["error"])
        return self._incoming(scope, reply, answer.get("ok"))

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

    def _privacy(self, scope: InstanceScope, args: Mapping[str, Any]) -> dict[str, Any]:
        # Only a dataset the instance may read can be charged (the same check as a read).
        dataset = str(args.get("dataset"))
        self._dataset(scope, dataset)
        return self._ledger.spend(dataset, Charge.from_dict(args.get("charge") or {}))

    def _secret(self, scope: InstanceScope, args: Mapping[str, Any]) -> bytes:
        # An instance id starts with its swarm id ("swarm/iteration/alias/..."): every
        # task of a swarm on this node gets the same secret, other swarms another.
        swarm_id = scope.instance_id.split("/", 1)[0]
        message = f"{swarm_id}\x00{args.get('purpose', '')}".encode()
        return hmac.new(self._secret_key, message, hashlib.sha256).digest()

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
        if length <= NET_INLINE_MAX:  # inline: no upload, no blob, one round trip
            return {"inline": b"".join(file_chunks(path, offset, length))}
        digest = self._caches.publish(path, offset, length)
        return {"blob": digest, "length": length}

    def _local(self, scope: InstanceScope, wire: Wire | None) -> Wire | None:
        if isinstance(wire, dict) and "blob" in wire:
            if scope.view is None:  # never the shared cache: it holds every swarm's values
                raise ShoalError(
                    f"instance {scope.instance_id} has no folder for the values it is given",
                    code="node.sandbox",
                    hint="this is a bug in the node agent: every instance gets a view",
                )
            path = self._caches.view(str(wire["blob"]), scope.view)
            local: FileWire = {"file": str(path), "offset": 0, "length": int(wire["length"])}
            return local
        return wire

    def _incoming(self, scope: InstanceScope, reply: ops.Reply, value: Any) -> Any:
        if reply is ops.Reply.VERSIONED and isinstance(value, dict) and "value" in value:
            return {**value, "value": self._local(scope, value["value"])}
        if reply is ops.Reply.RECORDS and isinstance(value, list):
            return [{**r, "value": self._local(scope, r["value"])} for r in value]
        if reply is ops.Reply.WIRE:
            return self._local(scope, value)
        return value
