"""HTTP bodies of identities: node credentials, join tokens, the user token
(docs/api.md, "Identities"). The operator's routes (``/v1/admin/...``) take the
operator token; ``POST /v1/nodes/credential`` a node's current credential.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from shoal._api.schemas import NODE_ID, Body

TOKEN_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_EXPIRY_S = 100 * 366 * 86400  # a century: longer is "never" (leave it out)
MAX_USES = 2**31 - 1


class CredentialBody(Body):
    """``POST /v1/nodes/credential``: the new credential the node chose
    (``<node_id>:<32 to 128 URL-safe characters>``), or none to get one made by the
    coordinator. Choosing it makes the rotation safe to repeat."""

    credential: Annotated[StrictStr, Field(max_length=300)] | None = None


class JoinTokenBody(Body):
    """``POST /v1/admin/join-tokens``: what the new token allows.

    ``expires_in_s``: seconds until it stops working (None: never); ``uses``: how many
    enrolments it allows (None: any number); ``node_id``: the only node id it enrols
    (None: any). A token bound to a node id may re-enrol that node when it is known
    already (the operator replaces a node that lost its credential).
    """

    expires_in_s: Annotated[StrictFloat | StrictInt, Field(gt=0, le=MAX_EXPIRY_S)] | None = None
    uses: Annotated[StrictInt, Field(ge=1, le=MAX_USES)] | None = None
    node_id: Annotated[str, Field(pattern=NODE_ID)] | None = None


class JoinTokenInfo(BaseModel):
    """A join token as listed (never its secret)."""

    token_id: str
    created: float
    expires: float | None
    max_uses: int | None
    uses: int
    node_id: str | None
    revoked: float | None
    state: str  # active, expired, used up, revoked


class JoinTokenCreated(JoinTokenInfo):
    """A new join token, with its secret (shown once: the store keeps its hash)."""

    token: str


class TokenAnswer(BaseModel):
    """A new secret (shown once)."""

    token: str


class NodeIdentityAnswer(BaseModel):
    """What became of a node's identity after an operator's action."""

    node_id: str
    revoked: bool
    lost_instances: int


__all__ = [
    "TOKEN_ID",
    "CredentialBody",
    "JoinTokenBody",
    "JoinTokenCreated",
    "JoinTokenInfo",
    "NodeIdentityAnswer",
    "TokenAnswer",
]
