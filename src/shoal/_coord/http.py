"""HTTP plumbing shared by the routes: auth, msgpack bodies, errors, the size limit."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any, TypeVar

import msgpack
from fastapi import Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal._coord.driver import Coordinator
from shoal._coord.errors import ApiError, error_body
from shoal._coord.ratelimit import AuthLimiter
from shoal._coord.storage import storage_full
from shoal._errors import PlanError, ShoalError

log = logging.getLogger("shoal.coordinator")

M = TypeVar("M", bound=BaseModel)
MSGPACK = "application/msgpack"

bearer = HTTPBearer(
    auto_error=False,
    description="A node credential (node routes) or the user API token (user routes).",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def coordinator(request: Request) -> Coordinator:
    """The app's driver."""
    coord: Coordinator = request.app.state.coord
    return coord


def client_ip(request: Request) -> str:
    """The source address of a request, as the rate limit counts it (the client's IP;
    uvicorn takes it from ``X-Forwarded-For`` only when the request comes from a proxy
    it trusts, by default 127.0.0.1)."""
    return request.client.host if request.client is not None else "unknown"


def _limiter(request: Request) -> AuthLimiter:
    limiter: AuthLimiter = request.app.state.auth_limiter
    return limiter


def check_source(request: Request) -> str:
    """Refuse a source that failed to authenticate too often (429 with ``Retry-After``),
    before any credential is looked up; return the source."""
    source = client_ip(request)
    wait = _limiter(request).retry_after(source)
    if wait is not None:
        raise ApiError(
            429,
            f"too many failed authentications from {source}; try again in {wait} s",
            code="auth.rate_limited",
            hint="check the token or credential this client sends; other addresses are "
            "not affected",
            headers={"Retry-After": str(wait)},
        )
    return source


async def source_allowed(request: Request) -> str:
    """:func:`check_source` as a dependency that stays on the event loop (no thread hop
    for a check that costs a dictionary lookup)."""
    return check_source(request)


def auth_failed(request: Request, error: ApiError) -> ApiError:
    """Count a failed authentication of the request's source; return ``error``."""
    source = client_ip(request)
    if _limiter(request).failed(source):
        log.warning(
            "%s failed to authenticate too often (last: %s); refusing it for a while",
            source,
            error.code,
        )
    return error


def _token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or not creds.credentials:
        raise ApiError(
            401,
            "missing bearer token",
            code="auth.missing",
            hint="send 'Authorization: Bearer <token>'",
        )
    return creds.credentials


async def _node_of(request: Request, token: str) -> str | None:
    # On the event loop, not in a worker thread: under load the thread pool queues for
    # seconds, and a node whose request arrives is alive now (Coordinator.seen), not
    # when a thread gets to it. Only a credential missing from the cache costs a store
    # read, in a worker thread.
    coord = coordinator(request)
    node_id = token.partition(":")[0]
    ok = coord.credential_cached(node_id, token)
    if ok is None:
        ok = await run_in_threadpool(coord.credential_ok, node_id, token)
    if not ok:
        return None
    coord.seen(node_id)
    return node_id


def _same(token: str, expected: str) -> bool:
    return hmac.compare_digest(token.encode(), expected.encode())


def _is_user(request: Request, token: str) -> bool:
    expected: str = request.app.state.user_token
    return _same(token, expected)


_NODE_HINT = (
    "the node's credential was rotated, revoked or never issued: a node agent reads it "
    "from <state_dir>/credential; the operator can reset the node "
    "(`shoal coordinator node reset ID`) or make a join token bound to it "
    "(`shoal coordinator token create --node ID`)"
)


async def node_auth(request: Request, creds: Bearer) -> str:
    """The id of the node whose credential authorises the request, or 401 (429 for a
    source that failed too often)."""
    check_source(request)
    node_id = await _node_of(request, _token(creds))
    if node_id is None:
        raise auth_failed(
            request,
            ApiError(401, "the node credential is not valid", code="auth.node", hint=_NODE_HINT),
        )
    return node_id


def user_auth(request: Request, creds: Bearer) -> str:
    """``"user"`` if the request carries the user API token, or 401 (429 for a source
    that failed too often)."""
    check_source(request)
    if not _is_user(request, _token(creds)):
        raise auth_failed(
            request,
            ApiError(
                401,
                "the user API token is not valid",
                code="auth.user",
                hint="use the token in <state>/user-token, printed by `shoal coordinator "
                "start` (after `shoal coordinator user-token rotate`, the new one)",
            ),
        )
    return "user"


def operator_auth(request: Request, creds: Bearer) -> str:
    """``"operator"`` if the request carries the operator token (``<state>/operator-token``,
    read by the ``shoal coordinator`` commands), or 401 (429 for a source that failed
    too often)."""
    check_source(request)
    expected: str = request.app.state.operator_token
    if not _same(_token(creds), expected):
        raise auth_failed(
            request,
            ApiError(
                401,
                "the operator token is not valid",
                code="auth.operator",
                hint="run the `shoal coordinator` command on the coordinator's machine "
                "with its --state folder (it reads <state>/operator-token)",
            ),
        )
    return "operator"


async def any_auth(request: Request, creds: Bearer) -> str:
    """A node or the user (bundles and blobs are read by both)."""
    check_source(request)
    token = _token(creds)
    if _is_user(request, token):
        return "user"
    node_id = await _node_of(request, token)
    if node_id is None:
        raise auth_failed(request, ApiError(401, "the token is not valid", code="auth.token"))
    return node_id


# ------------------------------------------------------------------------ bodies
def _fields(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}" for err in e.errors()
    )


async def msgpack_body(request: Request, model: type[M]) -> M:
    """Decode and validate a msgpack body (400 if not msgpack, 422 on a schema mismatch)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(MSGPACK):
        raise ApiError(
            400,
            f"expected a {MSGPACK} body, got {ctype or 'no content type'!r}",
            code="request.content_type",
            hint=f"send Content-Type: {MSGPACK}",
        )
    try:
        body = await request.body()
    except ClientDisconnect:  # an agent stopped mid-request: nobody reads the answer
        raise ApiError(400, "the client disconnected", code="request.disconnected") from None
    try:
        doc = msgpack.unpackb(body, raw=False)
    except Exception as e:  # msgpack raises several unrelated types on bad input
        raise ApiError(400, f"the body is not msgpack: {e}", code="request.msgpack") from None
    return validate(model, doc)


def validate(model: type[M], doc: Any) -> M:
    """Validate a decoded document against ``model`` (422 naming the fields)."""
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ApiError(
            422, f"{model.__name__}: {_fields(e)}", code="request.schema", hint="see /openapi.json"
        ) from None


def msgpack_response(value: Any) -> Response:
    """A msgpack answer (bytes stay bytes)."""
    return Response(msgpack.packb(value, use_bin_type=True), media_type=MSGPACK)


def msgpack_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a msgpack request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {MSGPACK: {"schema": model.model_json_schema(ref_template="#/{model}")}},
        }
    }


# ------------------------------------------------------------------------ errors
def _json_error(
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, hint), status_code=status, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> Response:
    """ApiError -> its status; PlanError -> 422; other ShoalErrors -> 400."""
    if isinstance(exc, ApiError):
        return _json_error(exc.status, exc.code, exc.message, exc.hint, exc.headers)
    assert isinstance(exc, ShoalError)
    status = 422 if isinstance(exc, PlanError) else 400
    return _json_error(status, exc.code, exc.message, exc.hint)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's request validation -> 422 in the shared shape."""
    assert isinstance(exc, RequestValidationError)
    fields = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
    return _json_error(422, "request.schema", fields, "see /openapi.json")


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (unknown route, 413, ...) in the shared shape."""
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, TooLarge):
        return _json_error(413, "request.too_large", exc.detail, exc.hint)
    return _json_error(exc.status_code, f"http.{exc.status_code}", str(exc.detail))


async def on_internal_error(request: Request, exc: Exception) -> Response:
    """Anything else: 500 without internals (they go to the coordinator's log); a write
    that found the disk full: 507 ``storage.full``."""
    if (full := storage_full(exc, f"{request.method} {request.url.path}")) is not None:
        return _json_error(full.status, full.code, full.message, full.hint)
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(500, "internal", "internal error; see the coordinator's log")


# ------------------------------------------------------------------- size limit
class TooLarge(StarletteHTTPException):
    """A request body over the limit (an HTTPException so FastAPI passes it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")
        self.hint = "send large values as blobs, or start the coordinator with --max-request-mb"


class SizeLimit:
    """Answers 413 for request bodies over ``limit`` bytes; blob uploads are exempt
    (they stream to disk)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exempt = scope["type"] != "http" or (
            scope["method"] == "PUT" and scope["path"].startswith("/v1/blobs/")
        )
        if exempt:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    exc = TooLarge(self.limit)
                    resp = _json_error(413, "request.too_large", exc.detail, exc.hint)
                    await resp(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise TooLarge(self.limit)
            return message

        await self.app(scope, limited, send)
