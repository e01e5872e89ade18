"""Join tokens: made, checked and counted against the store, which keeps only a hash of
each secret. Secrets are never logged.

The token in the coordinator's state folder (``<state>/join-token``, printed by
``shoal coordinator token``) is the token ``default``: unlimited until revoked. The
operator makes others with ``shoal coordinator token create`` (an expiry, a number of
uses, a node id it is bound to), lists them and revokes them.
"""

from __future__ import annotations

import secrets
import time

from shoal._coord.errors import ApiError
from shoal._coord.state import hash_credential
from shoal._store.base import JoinTokenRecord, Store

DEFAULT_ID = "default"

_WHEN = "%Y-%m-%d %H:%M:%S UTC"


def _when(t: float) -> str:
    return time.strftime(_WHEN, time.gmtime(t))


def ensure_default(store: Store, secret: str, now: float) -> JoinTokenRecord:
    """Record the state folder's join token as the token ``default``.

    A new secret in the folder (its file was deleted and made again) replaces the old
    one; a revoked default token stays revoked.
    """
    digest = hash_credential(secret)
    found = store.join_token_get(DEFAULT_ID)
    if found is not None and (found.token_hash == digest or found.revoked is not None):
        return found
    record = JoinTokenRecord(DEFAULT_ID, digest, now if found is None else found.created)
    store.join_token_put(record)
    return record


def create(
    store: Store,
    now: float,
    expires_in_s: float | None = None,
    uses: int | None = None,
    node_id: str | None = None,
) -> tuple[JoinTokenRecord, str]:
    """Make a join token; returns its record and its secret (shown once)."""
    secret = secrets.token_urlsafe(32)
    while True:
        token_id = secrets.token_hex(4)
        if store.join_token_get(token_id) is None:
            break
    record = JoinTokenRecord(
        token_id,
        hash_credential(secret),
        now,
        expires=None if expires_in_s is None else now + expires_in_s,
        max_uses=uses,
        node_id=node_id,
    )
    store.join_token_put(record)
    return record, secret


def check(store: Store, secret: str, node_id: str, now: float) -> JoinTokenRecord:
    """The join token ``secret`` if it may enrol ``node_id`` now (its use is counted
    later, by :func:`use`).

    Raises
    ------
    ApiError
        401 ``auth.join`` (no such token), ``auth.join_revoked``, ``auth.join_expired``,
        ``auth.join_used_up``; 403 ``auth.join_node`` (bound to another node id).
    """
    record = store.join_token_find(hash_credential(secret)) if secret else None
    if record is None:
        raise ApiError(
            401,
            "the join token is not valid",
            code="auth.join",
            hint="get one from the coordinator's operator: `shoal coordinator token` (the "
            "default token) or `shoal coordinator token create`",
        )
    state = record.state(now)
    if state == "revoked":
        raise ApiError(
            401,
            f"join token {record.token_id!r} was revoked",
            code="auth.join_revoked",
            hint="ask the operator for a new one (`shoal coordinator token create`)",
        )
    if state == "expired":
        assert record.expires is not None
        raise ApiError(
            401,
            f"join token {record.token_id!r} expired at {_when(record.expires)}",
            code="auth.join_expired",
            hint="ask the operator for a new one (`shoal coordinator token create`)",
        )
    if state == "used up":
        raise ApiError(
            401,
            f"join token {record.token_id!r} was used {record.uses} times, its limit",
            code="auth.join_used_up",
            hint="ask the operator for a new one (`shoal coordinator token create --uses N`)",
        )
    if record.node_id is not None and record.node_id != node_id:
        raise ApiError(
            403,
            f"join token {record.token_id!r} enrols node {record.node_id!r} only, not {node_id!r}",
            code="auth.join_node",
            hint=f"set node_id = {record.node_id!r} in the node config, or ask the operator "
            "for a token of this node (`shoal coordinator token create --node ID`)",
        )
    return record


def use(store: Store, record: JoinTokenRecord, now: float) -> None:
    """Count one use of a checked token (401 ``auth.join_used_up`` if another
    enrolment took its last use, or it was revoked, meanwhile)."""
    if not store.join_token_use(record.token_id, now):
        raise ApiError(
            401,
            f"join token {record.token_id!r} is no longer usable (used up or revoked meanwhile)",
            code="auth.join_used_up",
            hint="ask the operator for a new one (`shoal coordinator token create`)",
        )
