"""Who may read which blob (issue #14, point 3; docs/api.md, "Blobs and bundles").

The store keeps, per digest, the swarms it belongs to and as what (a module ``bundle``
or a ``value``: a result, global or state value), and who *holds* it: a node or the
user that uploaded the bytes, or was given them under a swarm. The rules:

- A node reads a value blob (``GET /v1/blobs``) only if it holds it: it uploaded the
  bytes itself, or one of its instances was given the blob by a world call (a global,
  an upstream result, a state value). A world value may name only a blob its node
  holds, so knowing a digest gives nothing.
- A node reads a bundle (``GET /v1/bundles``) only while it runs an instance of a
  module with that bundle; never a value through the bundles route, nor a bundle
  through the blobs route (unless it holds the same bytes as a value).
- The user reads the blobs of the swarms it owns, and the blobs it uploaded.

An answer that refuses is the same 404 as for a blob that is not stored: a node learns
nothing about other swarms' blobs, not even that they exist.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from shoal._coord.errors import ApiError
from shoal._runtime import ops
from shoal._store.base import Store
from shoal._wire import INLINE_MAX

USER = "user"  # the principal the user API token stands for (SwarmRecord.owner)
_NODE = "node:"
_CACHE = 100_000  # grants remembered in memory (the store is the truth)


def node_holder(node_id: str) -> str:
    """The store's name for a node as a blob holder (the user is :data:`USER`): a node
    enrolled under the id ``"user"`` is still never taken for the user."""
    return f"node:{node_id}"


def blob_digests(reply: ops.Reply, value: Any) -> Iterator[str]:
    """The digests of the ``blob`` wires in an answer of kind ``reply``."""
    wires: list[Any] = []
    if reply is ops.Reply.WIRE:
        wires = [value]
    elif reply is ops.Reply.VERSIONED and isinstance(value, dict):
        wires = [value.get("value")]
    elif reply is ops.Reply.RECORDS and isinstance(value, list):
        wires = [r.get("value") for r in value if isinstance(r, dict)]
    for wire in wires:
        if isinstance(wire, dict) and isinstance(wire.get("blob"), str):
            yield wire["blob"]


def not_held(digest: str, node_id: str) -> ApiError:
    """403: a world value names a blob its node neither uploaded nor was given."""
    return ApiError(
        403,
        f"node {node_id!r} sent a value in blob {digest}, which it neither uploaded nor was given",
        code="blob.not_held",
        hint="upload the value's bytes with PUT /v1/blobs/{digest} first",
    )


def unreadable(what: str, digest: str, who: str) -> ApiError:
    """404 for a blob or bundle that is not stored or that holder ``who`` may not read."""
    if what == "bundle":
        rule = (
            "a node reads the bundles of the modules it runs, the user those of its "
            "swarms; values are read with GET /v1/blobs/{digest}"
        )
    else:
        rule = (
            "a node reads the values its instances were given (globals, upstream results, "
            "state) and those it uploaded, the user those of its swarms; bundles are read "
            "with GET /v1/bundles/{digest}"
        )
    return ApiError(
        404,
        f"no {what} {digest} that "
        f"{'the user' if who == USER else f'node {who.removeprefix(_NODE)!r}'} may read",
        code=f"{what}.unknown",
        hint=rule,
    )


class BlobAccess:
    """Records and checks who may read which blob.

    Parameters
    ----------
    store
        Where claims and grants are kept.
    runs_bundle
        ``(node_id, digest) -> bool``: whether the node runs an instance of a module
        with that bundle now (the engine knows).
    swarm_quota_bytes
        The most bytes of values stored as blobs that one swarm may claim (None: no
        bound). Inline values (under 64 KiB) are bounded by the request size instead.
    """

    def __init__(
        self,
        store: Store,
        runs_bundle: Callable[[str, str], bool],
        swarm_quota_bytes: int | None = None,
    ) -> None:
        self.store = store
        self._runs_bundle = runs_bundle
        self.swarm_quota_bytes = swarm_quota_bytes
        self._lock = threading.Lock()
        self._known: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def _grant(self, digest: str, who: str, swarm_id: str) -> None:
        key = (digest, who, swarm_id)
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return
        self.store.blob_grant(*key)
        with self._lock:
            self._known[key] = None
            if len(self._known) > _CACHE:
                self._known.popitem(last=False)

    # ------------------------------------------------------------------ writes
    def uploaded(self, who: str, digest: str) -> None:
        """Holder ``who`` (:data:`USER` or :func:`node_holder`) uploaded the blob's bytes."""
        self._grant(digest, who, "")

    def bundles(self, swarm_id: str, digests: list[str]) -> None:
        """A submitted swarm's module bundles belong to it."""
        for digest in digests:
            self.store.blob_claim(digest, swarm_id, "bundle")

    def sent(self, node_id: str, swarm_id: str, digest: str, length: int) -> None:
        """An instance of ``swarm_id`` on ``node_id`` stores a value in blob ``digest``
        of ``length`` bytes.

        Raises
        ------
        ApiError
            403 ``blob.not_held`` unless the node uploaded the bytes or was given them;
            413 ``swarm.quota`` if the swarm's values would pass its quota (a blob the
            swarm already holds costs nothing again).
        """
        if not self.store.blob_granted(digest, node_holder(node_id)):
            raise not_held(digest, node_id)
        self._claim_value(swarm_id, digest, length)
        self._grant(digest, node_holder(node_id), swarm_id)

    def kept_inline(self, node_id: str, swarm_id: str, data: bytes) -> None:
        """An instance of ``swarm_id`` stores a value sent inline that is larger than
        the codec's inline limit (the agent sends values up to 1 MiB inline, to save
        the round trips of a blob): it counts against the swarm's quota like a blob of
        the same bytes (once per distinct value, under the digest of its bytes).

        Raises
        ------
        ApiError
            413 ``swarm.quota`` as for :meth:`sent`.
        """
        if len(data) <= INLINE_MAX:
            return  # bounded by the request size, as it always was
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._claim_value(swarm_id, digest, len(data))

    def _claim_value(self, swarm_id: str, digest: str, length: int) -> None:
        """Claim value ``digest`` of ``length`` bytes for the swarm; 413 if that passes
        the swarm's quota (a value the swarm already holds costs nothing again). One
        store transaction: this runs for every large result an instance stores."""
        quota = self.swarm_quota_bytes
        over = self.store.value_claim(digest, swarm_id, length, quota)
        if over is not None:
            raise ApiError(
                413,
                f"swarm {swarm_id} would store {over} bytes of values, over "
                f"its quota of {quota} bytes (value {digest}, {length} bytes)",
                code="swarm.quota",
                hint="store smaller values, or start the coordinator with a larger "
                "--swarm-quota-mb",
            )

    def given(self, node_id: str, swarm_id: str, reply: ops.Reply, value: Any) -> None:
        """A world answer to an instance of ``swarm_id`` on ``node_id`` hands it the
        blobs in ``value`` (recorded before the answer leaves)."""
        for digest in blob_digests(reply, value):
            self._grant(digest, node_holder(node_id), swarm_id)

    # ------------------------------------------------------------------ checks
    def may_read(self, who: str, digest: str, kind: str) -> bool:
        """Whether holder ``who`` (:data:`USER` or :func:`node_holder`) may read the blob
        as ``kind`` (``"value"`` through the blobs route, ``"bundle"`` through the
        bundles route)."""
        if kind == "bundle" and who != USER:
            return self._runs_bundle(who.removeprefix(_NODE), digest)
        if kind == "value" and self.store.blob_granted(digest, who):
            return True  # uploaded or given
        if who != USER:
            return False
        for swarm_id, claimed in self.store.blob_claims(digest):
            if claimed == kind:
                record = self.store.swarm_get(swarm_id)
                if record is not None and record.owner == USER:
                    return True
        return False
