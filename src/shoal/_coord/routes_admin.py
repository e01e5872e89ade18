"""The operator's routes (``/v1/admin/...``, the operator token): join tokens, node
revocation and reset, rotation of the user token. The ``shoal coordinator`` commands
call them with the operator token of the state folder (docs/api.md, "Identities")."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from shoal._api.identity import (
    TOKEN_ID,
    JoinTokenBody,
    JoinTokenCreated,
    JoinTokenInfo,
    NodeIdentityAnswer,
    TokenAnswer,
)
from shoal._api.schemas import NODE_ID
from shoal._coord import join_tokens
from shoal._coord.errors import ApiError
from shoal._coord.http import coordinator, operator_auth
from shoal._coord.openapi import answers
from shoal._store.base import JoinTokenRecord

router = APIRouter(prefix="/v1/admin", tags=["operator"], dependencies=[Depends(operator_auth)])
log = logging.getLogger("shoal.coordinator")


def _info(record: JoinTokenRecord, now: float) -> JoinTokenInfo:
    return JoinTokenInfo(
        token_id=record.token_id,
        created=record.created,
        expires=record.expires,
        max_uses=record.max_uses,
        uses=record.uses,
        node_id=record.node_id,
        revoked=record.revoked,
        state=record.state(now),
    )


@router.post("/join-tokens", response_model=JoinTokenCreated, responses=answers(400, 401, 413, 422))
async def create_join_token(request: Request, body: JoinTokenBody) -> JoinTokenCreated:
    """Make a join token; its secret is in this answer only (the store keeps a hash)."""
    coord = coordinator(request)
    now = coord.clock()
    expires = None if body.expires_in_s is None else float(body.expires_in_s)
    record, secret = await run_in_threadpool(
        join_tokens.create, coord.store, now, expires, body.uses, body.node_id
    )
    log.info(
        "join token %s made (node %s, uses %s, expires %s)",
        record.token_id,
        record.node_id or "any",
        record.max_uses or "any",
        record.expires or "never",
    )
    return JoinTokenCreated(**_info(record, now).model_dump(), token=secret)


@router.get("/join-tokens", response_model=list[JoinTokenInfo], responses=answers(401))
async def list_join_tokens(request: Request) -> list[JoinTokenInfo]:
    """Every join token, oldest first, with its state (never a secret)."""
    coord = coordinator(request)
    records = await run_in_threadpool(coord.store.join_tokens)
    now = coord.clock()
    return [_info(r, now) for r in records]


@router.post(
    "/join-tokens/{token_id}/revoke", response_model=JoinTokenInfo, responses=answers(401, 404, 422)
)
async def revoke_join_token(
    request: Request, token_id: str = Path(pattern=TOKEN_ID)
) -> JoinTokenInfo:
    """Revoke a join token: no enrolment is accepted with it from now on (nodes that
    enrolled with it keep their credentials)."""
    coord = coordinator(request)
    now = coord.clock()
    if not await run_in_threadpool(coord.store.join_token_revoke, token_id, now):
        raise ApiError(
            404,
            f"unknown join token {token_id!r}",
            code="join_token.unknown",
            hint="list them with `shoal coordinator token list`",
        )
    record = await run_in_threadpool(coord.store.join_token_get, token_id)
    assert record is not None
    log.warning("join token %s revoked", token_id)
    return _info(record, now)


@router.post(
    "/nodes/{node_id}/revoke", response_model=NodeIdentityAnswer, responses=answers(401, 422)
)
async def revoke_node(request: Request, node_id: str = Path(pattern=NODE_ID)) -> NodeIdentityAnswer:
    """End a node's credential at once; its live instances count as its node lost. The
    id stays taken: it enrols again only with a join token bound to it, or after a
    reset."""
    lost = await run_in_threadpool(coordinator(request).revoke_node, node_id, False)
    return NodeIdentityAnswer(node_id=node_id, revoked=True, lost_instances=lost)


@router.post(
    "/nodes/{node_id}/reset", response_model=NodeIdentityAnswer, responses=answers(401, 422)
)
async def reset_node(request: Request, node_id: str = Path(pattern=NODE_ID)) -> NodeIdentityAnswer:
    """End a node's credential at once (its live instances count as lost) and free its
    id: the next enrolment with a valid join token takes it."""
    lost = await run_in_threadpool(coordinator(request).revoke_node, node_id, True)
    return NodeIdentityAnswer(node_id=node_id, revoked=False, lost_instances=lost)


@router.post("/user-token", response_model=TokenAnswer, responses=answers(401))
async def rotate_user_token(request: Request) -> TokenAnswer:
    """A new user API token (in this answer and in ``<state>/user-token``); the old one
    stops working at once."""
    token = secrets.token_urlsafe(32)
    save: Callable[[str], None] | None = request.app.state.save_user_token
    if save is not None:  # on disk first: a failed write leaves the old token working
        await run_in_threadpool(save, token)
    request.app.state.user_token = token
    log.warning("the user API token was rotated; the old one no longer works")
    return TokenAnswer(token=token)
