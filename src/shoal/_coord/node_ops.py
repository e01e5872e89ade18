"""The node half of the coordinator driver: enrolment, heartbeats, liveness."""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from shoal._api.schemas import CancelInstruction, RunInstruction
from shoal._coord.notify import NodeQueues
from shoal._coord.state import NodeReport, NodeState, Offer, hash_credential
from shoal._engine import Engine, InstanceView, NodeView
from shoal._engine.messages import (
    Event,
    Instruction,
    NodeJoined,
    NodeLost,
    NodeRestarted,
    RunInstance,
)
from shoal._store.base import NodeRecord, Store

log = logging.getLogger("shoal.coordinator")

_STORE_LAST_SEEN_EVERY_S = 30.0  # a heartbeat is not worth a database write every time


class NodeOps:
    """Mixed into :class:`~shoal._coord.driver.Coordinator`; the attributes below are
    its state (declared here for type checking)."""

    store: Store
    engine: Engine
    queues: NodeQueues
    clock: Callable[[], float]
    heartbeat_timeout_s: float
    _lock: threading.RLock
    _nodes: dict[str, NodeState]
    _credentials: dict[str, str]

    if TYPE_CHECKING:  # the Coordinator's (a stub here would shadow DriverBase.feed)

        def feed(self, event: Event) -> list[Instruction]: ...

        def _safe_feed(self, event: Event) -> None: ...

        def _run_item(self, inst: RunInstance | InstanceView) -> RunInstruction: ...

        def _deaf(self, now: float) -> bool: ...

    def _connected(self, node_id: str) -> bool:
        view = self.engine.node(node_id)
        return view is not None and view.connected

    def _node(self, node_id: str) -> NodeState:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = NodeState(node_id)
        return node

    # ------------------------------------------------------------------ nodes
    def credential_ok(self, node_id: str, credential: str) -> bool:
        """Whether ``credential`` is the current credential of ``node_id``."""
        expected = self._credentials.get(node_id)
        if expected is None:
            record = self.store.node_get(node_id)
            if record is None or not record.credential_hash:
                return False
            expected = self._credentials[node_id] = record.credential_hash
        return hmac.compare_digest(hash_credential(credential), expected)

    def credential_cached(self, node_id: str, credential: str) -> bool | None:
        """Like :meth:`credential_ok` without touching the store: None if the node's
        credential is not cached (safe on the event loop)."""
        expected = self._credentials.get(node_id)
        if expected is None:
            return None
        return hmac.compare_digest(hash_credential(credential), expected)

    def seen(self, node_id: str) -> None:
        """A request of the node arrived: it is alive, however long the request then
        waits for a thread or the lock. Runs on the event loop, without the lock (one
        float store); a node already lost joins again by its next heartbeat or poll."""
        node = self._nodes.get(node_id)
        if node is not None and self._connected(node_id):
            node.last_seen = max(node.last_seen, self.clock())

    def heartbeat_unchanged(self, node_id: str, offer: Offer, session: str | None) -> bool:
        """Whether a heartbeat changes nothing the engine must hear about now, beyond the
        liveness :meth:`seen` already stamped: the node is connected with this offer,
        and no new agent session says that it restarted. Runs on the event loop,
        without the lock (it only reads); a heartbeat it does not pass goes to
        :meth:`heartbeat`, and one it passes may still start a full one in the
        background (:meth:`check_due`).

        The instances a node lists need no look on this path: each that ends while its
        node is connected gets a ``cancel`` from the engine, delivered at least once,
        and the full heartbeat after a join and every 30 s looks at them too.
        """
        node = self._nodes.get(node_id)
        if node is None:
            return False
        if session is not None and node.session is not None and session != node.session:
            return False
        view = self.engine.node(node_id)
        return view is not None and view.connected and _offer_of(view) == offer

    def check_due(self, node_id: str) -> bool:
        """Whether a full heartbeat of the node is due: none checked it since it joined
        (its first session, what it runs), or its record's ``last_seen`` was stored
        ``_STORE_LAST_SEEN_EVERY_S`` ago, and none is under way. If so, one counts as
        under way until :meth:`heartbeat` ends. On the event loop."""
        node = self._nodes.get(node_id)
        if node is None or node.checking:
            return False
        if node.checked and self.clock() - node.stored_seen <= _STORE_LAST_SEEN_EVERY_S:
            return False
        node.checking = True
        return True

    def touch_unchanged(self, node_id: str) -> bool:
        """Whether a long poll changes nothing but liveness (:meth:`seen` stamped it):
        the node is connected. Runs on the event loop, without the lock; a lost node's
        poll goes to :meth:`touch`, which joins it again."""
        return node_id in self._nodes and self._connected(node_id)

    def enrol(self, node_id: str, offer: Offer) -> str:
        """Register (or re-register) a node; return its new credential.

        Every live instance of the node is offered again: a node that enrols again has
        usually lost its state.
        """
        credential = f"{node_id}:{secrets.token_urlsafe(32)}"
        now = self.clock()
        with self._lock:
            node = self._node(node_id)
            self._credentials[node_id] = hash_credential(credential)
            self.store.node_upsert(
                NodeRecord(
                    node_id,
                    self._credentials[node_id],
                    tuple(sorted(offer.datasets)),
                    offer.gpu,
                    None if offer.images is None else tuple(sorted(offer.images)),
                    now,
                    True,
                )
            )
            node.stored_seen = now
            node.session = None
            self._contact(node, offer, now)
            self._reoffer(node_id)
        return credential

    def heartbeat(
        self, node_id: str, offer: Offer, session: str | None, running: list[str]
    ) -> None:
        """A node says it is alive and what it offers and runs."""
        now = self.clock()
        with self._lock:
            node = self._node(node_id)
            try:
                self._full_heartbeat(node, offer, session, running, now)
            finally:
                node.checking = False

    def _full_heartbeat(
        self, node: NodeState, offer: Offer, session: str | None, running: list[str], now: float
    ) -> None:
        # Under the lock.
        node_id = node.node_id
        restarted = node.session is not None and session is not None and session != node.session
        if session is not None:
            node.session = session
        if restarted and self._connected(node_id):
            # Its processes died with the old agent, but the node is back: the engine
            # decides on retries, which may run on it again.
            self.feed(NodeRestarted(node_id, now, "the node agent restarted"))
        self._contact(node, offer, now)
        for iid in running:
            inst = self.engine.find_instance(iid)
            if inst is None or inst.ended or inst.node_id != node_id:
                self.queues.push(
                    node_id, CancelInstruction(instance_id=iid, reason="the instance ended")
                )
        node.checked = True

    def touch(self, node_id: str) -> None:
        """A node long-polled: it is alive with its last known offer."""
        now = self.clock()
        with self._lock:
            node = self._node(node_id)
            view = self.engine.node(node_id)
            if view is not None:
                self._contact(node, Offer(view.datasets, view.gpu, view.images), now)
            else:
                node.last_seen = now  # it will say what it offers in its next heartbeat

    def _contact(self, node: NodeState, offer: Offer, now: float) -> None:
        node.last_seen = now
        view = self.engine.node(node.node_id)
        if view is None or not view.connected or offer != _offer_of(view):
            node.checked = False  # its next heartbeat is a full one
            self.feed(NodeJoined(node.node_id, now, offer.datasets, offer.gpu, offer.images))
            self._store_node(node, now)
        elif now - node.stored_seen > _STORE_LAST_SEEN_EVERY_S:
            self._store_node(node, now)

    def _store_node(self, node: NodeState, now: float) -> None:
        record = self.store.node_get(node.node_id)
        if record is None:
            return
        view = self.engine.node(node.node_id)
        offer = (
            Offer(frozenset(record.datasets), record.gpu, None) if view is None else _offer_of(view)
        )
        self.store.node_upsert(
            replace(
                record,
                datasets=tuple(sorted(offer.datasets)),
                gpu=offer.gpu,
                images=None if offer.images is None else tuple(sorted(offer.images)),
                last_seen=node.last_seen,
                connected=view is not None and view.connected,
            )
        )
        node.stored_seen = now

    def _reoffer(self, node_id: str) -> None:
        for inst in self.engine.active(node_id):
            self.queues.push_run(node_id, self._run_item(inst))

    def nodes(self) -> list[NodeReport]:
        """Every node the store knows, with what the engine and this driver know of it."""
        with self._lock:
            out = []
            for rec in self.store.nodes():
                node = self._nodes.get(rec.node_id)
                seen = node.last_seen if node is not None else rec.last_seen
                out.append(NodeReport(rec, seen, self.engine.node(rec.node_id)))
            return out

    def _late(self, now: float) -> bool:
        """Whether some connected node looks silent for longer than the timeout (a scan
        without the lock; :meth:`_check_heartbeats` decides under it)."""
        if self._deaf(now):
            return False
        return any(
            now - node.last_seen > self.heartbeat_timeout_s and self._connected(node.node_id)
            for node in list(self._nodes.values())
        )

    def _check_heartbeats(self, now: float) -> None:
        if self._deaf(now):  # its requests may be waiting unread: the loop is blocked
            return
        for node in list(self._nodes.values()):
            late = now - node.last_seen > self.heartbeat_timeout_s
            if late and self._connected(node.node_id):
                why = f"no heartbeat for {self.heartbeat_timeout_s:g}s"
                log.warning("node %s lost: %s", node.node_id, why)
                self._safe_feed(NodeLost(node.node_id, now, why))
                self._store_node(node, now)


def _offer_of(view: NodeView) -> Offer:
    return Offer(view.datasets, view.gpu, view.images)
