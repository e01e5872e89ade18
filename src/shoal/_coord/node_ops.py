"""The node half of the coordinator driver: enrolment, identities, heartbeats, liveness.

A node's identity is its id and its credential (``<node_id>:<secret>``; the store keeps
a hash). Enrolment never takes over an identity: a known node id is enrolled again only
with that node's current credential, with a join token bound to that id (the
operator's), or after the operator reset it. Revoking a node ends its credential at
once and its live instances count as its node lost.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from shoal._api.schemas import CancelInstruction, RunInstruction
from shoal._coord import join_tokens
from shoal._coord.errors import ApiError, not_found
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
            if record is None:
                return False
            # "": the node has no valid credential (revoked or reset), cached as such.
            expected = self._credentials[node_id] = record.credential_hash
        return bool(expected) and hmac.compare_digest(hash_credential(credential), expected)

    def credential_cached(self, node_id: str, credential: str) -> bool | None:
        """Like :meth:`credential_ok` without touching the store: None if the node's
        credential is not cached (safe on the event loop)."""
        expected = self._credentials.get(node_id)
        if expected is None:
            return None
        return bool(expected) and hmac.compare_digest(hash_credential(credential), expected)

    def _check_not_revoked(self, node_id: str) -> None:
        # A request authenticated just before its node was revoked must not join it again.
        if self._credentials.get(node_id) == "":
            raise ApiError(
                401,
                f"node {node_id!r} has no valid credential (revoked or reset by the operator)",
                code="auth.node",
                hint=_ASK_OPERATOR,
            )

    def admit(
        self,
        node_id: str,
        offer: Offer,
        join_token: str,
        credential: str | None = None,
        proposed: str | None = None,
    ) -> str:
        """Enrol a node if it may; return its new credential (``POST /v1/nodes/enrol``).

        A node id the coordinator does not know (or one the operator reset) enrols with
        any valid join token that is not bound to another id. A known id enrols again
        only with its current ``credential`` (then ``join_token`` is not needed) or
        with a join token bound to it. A use of the join token is counted only when the
        enrolment succeeds. ``proposed`` is the new credential the node chose: when it
        is the node's current credential already, the request repeats an enrolment whose
        answer was lost, and it is answered the same.

        Raises
        ------
        ApiError
            401 ``auth.node`` (a credential that is not the node's current one), the
            join token's 401 / 403 (:func:`shoal._coord.join_tokens.check`), 403
            ``auth.identity`` (the id is enrolled already) or ``auth.node_revoked``.
        """
        now = self.clock()
        if proposed is not None:
            _check_format(node_id, proposed)
        with self._lock:  # check and enrol at once: two enrolments cannot both pass
            if (
                credential is None
                and proposed is not None
                and self.credential_ok(node_id, proposed)
            ):
                log.info("node %s repeated its enrolment", node_id)
                return self.enrol(node_id, offer, proposed)
            if credential is not None:
                if credential.partition(":")[0] != node_id or not self.credential_ok(
                    node_id, credential
                ):
                    raise ApiError(
                        401,
                        f"the credential sent is not node {node_id!r}'s current credential",
                        code="auth.node",
                        hint="enrol with the credential in <state_dir>/credential, or "
                        "without one (a join token) if this node id is new",
                    )
                log.info("node %s enrolled again with its credential", node_id)
                return self.enrol(node_id, offer, proposed)
            token = join_tokens.check(self.store, join_token, node_id, now)
            record = self.store.node_get(node_id)
            if record is not None and token.node_id != node_id:
                if record.revoked is not None:
                    raise ApiError(
                        403,
                        f"node {node_id!r} was revoked by the operator",
                        code="auth.node_revoked",
                        hint=_ASK_OPERATOR,
                    )
                if record.credential_hash:
                    raise ApiError(
                        403,
                        f"node {node_id!r} is enrolled already: enrolling it again needs "
                        "its credential or the operator",
                        code="auth.identity",
                        hint="a node agent keeps its credential in <state_dir>/credential "
                        "and resumes with it; to replace the node, " + _ASK_OPERATOR,
                    )
            join_tokens.use(self.store, token, now)
            log.info("node %s enrolled with join token %s", node_id, token.token_id)
            return self.enrol(node_id, offer, proposed)

    def rotate_credential(self, node_id: str, presented: str, proposed: str | None = None) -> str:
        """Give a node a new credential; the old one stops working at once.

        Parameters
        ----------
        node_id
            The node, authenticated by ``presented`` (its current credential).
        presented
            The credential that authorised the request.
        proposed
            The new credential the node chose (``<node_id>:`` and 32 to 128 URL-safe
            characters), or None for one made here. Proposing it makes the rotation
            safe to repeat: a node whose answer was lost tries again with the proposed
            credential, which is then current, and gets the same answer.

        Raises
        ------
        ApiError
            422 ``auth.credential_format`` for a malformed proposal.
        """
        if proposed is None:
            proposed = f"{node_id}:{secrets.token_urlsafe(32)}"
        _check_format(node_id, proposed)
        if hmac.compare_digest(presented.encode(), proposed.encode()):
            return proposed  # a repeat whose first answer was lost: already current
        with self._lock:
            record = self.store.node_get(node_id)
            if record is None or not record.credential_hash:
                raise ApiError(
                    401,
                    f"node {node_id!r} has no valid credential to rotate",
                    code="auth.node",
                    hint=_ASK_OPERATOR,
                )
            digest = hash_credential(proposed)
            self.store.node_upsert(replace(record, credential_hash=digest))
            self._credentials[node_id] = digest
        log.info("node %s rotated its credential", node_id)
        return proposed

    def revoke_node(self, node_id: str, reset: bool = False) -> int:
        """End a node's credential at once; its live instances count as its node lost.

        Parameters
        ----------
        node_id
            The node.
        reset
            False (revoke): the id stays taken; it enrols again only with a join token
            bound to it (or after a reset). True (reset): the next enrolment with a
            valid join token takes the id.

        Returns
        -------
        int
            How many live instances the node had (they fail as ``lost``; retries may run
            elsewhere).
        """
        now = self.clock()
        with self._lock:
            record = self.store.node_get(node_id)
            if record is None:
                raise not_found("node", node_id, hint="list the nodes with `shoal nodes`")
            self._credentials[node_id] = ""
            revoked = None if reset else (record.revoked or now)
            self.store.node_upsert(
                replace(record, credential_hash="", revoked=revoked, connected=False)
            )
            lost = len(self.engine.active(node_id))
            if self._connected(node_id):
                why = "its node was reset" if reset else "its node was revoked"
                self.feed(NodeLost(node_id, now, f"{why} by the operator"))
            node = self._nodes.get(node_id)
            if node is not None:
                node.session = None
        log.warning("node %s %s by the operator", node_id, "reset" if reset else "revoked")
        return lost

    def seen(self, node_id: str) -> None:
        """A request of the node arrived: it is alive, however long the request then
        waits for a thread or the lock. Runs on the event loop, without the lock (one
        float store); a node already lost joins again by its next heartbeat or poll."""
        node = self._nodes.get(node_id)
        if node is not None and self._connected(node_id):
            node.last_seen = max(node.last_seen, self.clock())

    def beat(self, node_id: str) -> None:
        """A heartbeat of the node arrived: remember when, for its history. Runs on the
        event loop without the lock (one append to a bounded deque)."""
        node = self._nodes.get(node_id)
        if node is not None:
            node.beats.append(self.clock())

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

    def enrol(self, node_id: str, offer: Offer, credential: str | None = None) -> str:
        """Register (or re-register) a node without any check; return its new
        credential. :meth:`admit` decides whether a request may (in-process tests call
        this directly).

        Every live instance of the node is offered again: a node that enrols again has
        usually lost its state.
        """
        if credential is None:
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
            self._check_not_revoked(node_id)
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
            self._check_not_revoked(node_id)
            node = self._node(node_id)
            view = self.engine.node(node_id)
            if view is not None:
                self._contact(node, _offer_of(view), now)
            else:
                node.last_seen = now  # it will say what it offers in its next heartbeat

    def _contact(self, node: NodeState, offer: Offer, now: float) -> None:
        node.last_seen = now
        view = self.engine.node(node.node_id)
        if view is None or not view.connected or offer != _offer_of(view):
            node.checked = False  # its next heartbeat is a full one
            self.feed(
                NodeJoined(
                    node.node_id, now, offer.datasets, offer.gpu, offer.images, offer.capacity
                )
            )
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
                beats = tuple(node.beats) if node is not None else ()
                out.append(NodeReport(rec, seen, self.engine.node(rec.node_id), beats))
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


_CREDENTIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}:[A-Za-z0-9_-]{32,128}")


def _check_format(node_id: str, proposed: str) -> None:
    if not _CREDENTIAL.fullmatch(proposed) or proposed.partition(":")[0] != node_id:
        raise ApiError(
            422,
            f"the proposed credential of node {node_id!r} is not '{node_id}:' and 32 to "
            "128 URL-safe characters",
            code="auth.credential_format",
            hint="make it with secrets.token_urlsafe(32), or propose none to get one",
        )


_ASK_OPERATOR = (
    "the coordinator's operator can reset the node (`shoal coordinator node reset ID`: "
    "then it enrols with a join token) or make a join token bound to it "
    "(`shoal coordinator token create --node ID`)"
)


def _offer_of(view: NodeView) -> Offer:
    return Offer(view.datasets, view.gpu, view.images, view.capacity)
