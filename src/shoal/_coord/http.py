"""HTTP plumbing shared by the routes: auth, bodies, bounded errors, size limits.

Nothing a request sends can hold the event loop for long: each route has a body limit
(:func:`body_limit`: a few KiB where the body is small by nature), a body is read only
after authentication and decoded in a worker thread when large, msgpack maps and arrays
are bounded (:data:`MAX_ITEMS`), nesting too deep to decode is a 422, and an error body
quotes the first few problems and counts the rest.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal._coord.driver import Coordinator
from shoal._coord.errors import ApiError, error_body
from shoal._coord.ratelimit import AuthLimiter
from shoal._coord.storage import storage_full
from shoal._errors import PlanError, ShoalError
from shoal._store.lease import LeaseLost

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
#: Validation errors quoted in an error body; the rest are counted (an audit's 3 million
#: list items once made a 164 MB answer).
MAX_ERRORS_SHOWN = 5
#: Characters of an error message; longer ones are cut (they may quote the request).
MAX_MESSAGE_CHARS = 1000
#: Entries of one msgpack map or array, and its nesting depth (msgpack's own bound).
MAX_ITEMS = 10_000
#: Bodies up to this size are decoded on the event loop; larger ones in a worker thread.
INLINE_DECODE_BYTES = 64 * 1024


def _where(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "<body>"


def describe_errors(errors: Sequence[Mapping[str, Any]], total: int | None = None) -> str:
    """The first :data:`MAX_ERRORS_SHOWN` validation errors and how many more there are."""
    total = len(errors) if total is None else total
    shown = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in errors[:MAX_ERRORS_SHOWN])
    more = total - min(total, MAX_ERRORS_SHOWN)
    return shown + (f"; and {more} more errors" if more > 0 else "")


def _too_deep(what: str) -> ApiError:
    return ApiError(
        422,
        f"{what} is nested too deeply to decode",
        code="request.too_deep",
        hint="send a flatter document (nesting of a few levels is all any route needs)",
    )


async def _read(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:  # an agent stopped mid-request: nobody reads the answer
        raise ApiError(400, "the client disconnected", code="request.disconnected") from None


async def _off_loop(func: Callable[..., M], size: int, *args: Any) -> M:
    """``func(*args)`` on the event loop for a small body, else in a worker thread (a
    large body must never hold up heartbeats)."""
    if size <= INLINE_DECODE_BYTES:
        return func(*args)
    return await run_in_threadpool(func, *args)


def _decode_msgpack(model: type[M], body: bytes) -> M:
    try:
        doc = msgpack.unpackb(body, raw=False, max_map_len=MAX_ITEMS, max_array_len=MAX_ITEMS)
    except msgpack.StackError:
        raise _too_deep("the msgpack body") from None
    except ValueError as e:
        if "exceeds max_" in str(e):
            raise ApiError(
                413,
                f"the msgpack body has a map or array of more than {MAX_ITEMS} entries ({e})",
                code="request.too_many",
                hint="send large collections as blobs (PUT /v1/blobs/{digest})",
            ) from None
        raise ApiError(400, f"the body is not msgpack: {e}", code="request.msgpack") from None
    except Exception as e:  # msgpack raises several unrelated types on bad input
        raise ApiError(400, f"the body is not msgpack: {e}", code="request.msgpack") from None
    return validate(model, doc)


async def msgpack_body(request: Request, model: type[M]) -> M:
    """Decode and validate a msgpack body (400 if not msgpack, 413 past
    :data:`MAX_ITEMS` entries, 422 on a schema mismatch or too deep a nesting); a large
    body is decoded in a worker thread."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(MSGPACK):
        raise ApiError(
            400,
            f"expected a {MSGPACK} body, got {ctype or 'no content type'!r}",
            code="request.content_type",
            hint=f"send Content-Type: {MSGPACK}",
        )
    body = await _read(request)
    return await _off_loop(_decode_msgpack, len(body), model, body)


def _decode_json(model: type[M], body: bytes) -> M:
    try:
        doc = json.loads(body)
    except RecursionError:
        raise _too_deep("the JSON body") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ApiError(
            400, f"the body is not JSON: {e}", code="request.json", hint="send a JSON object"
        ) from None
    return validate(model, doc)


async def body_decoder(request: Request, model: type[M]) -> Callable[[], M]:
    """Read a JSON or msgpack body (by its content type, checked now); return the call
    that decodes and validates it, for the caller to run in the worker thread that does
    the rest of the request's work: one thread hop for a large report, not three."""
    if request.headers.get("content-type", "").startswith(MSGPACK):
        body = await _read(request)
        return functools.partial(_decode_msgpack, model, body)
    _json_type(request)
    body = await _read(request)
    return functools.partial(_decode_json, model, body)


def _json_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype:
        raise ApiError(
            400,
            f"expected an application/json body, got {ctype!r}",
            code="request.content_type",
            hint="send Content-Type: application/json",
        )


async def json_body(request: Request, model: type[M]) -> M:
    """Decode and validate a JSON body, read only now (after authentication), in a
    worker thread when large (400 if not JSON, 422 on a schema mismatch)."""
    _json_type(request)
    body = await _read(request)
    return await _off_loop(_decode_json, len(body), model, body)


def validate(model: type[M], doc: Any) -> M:
    """Validate a decoded document against ``model`` (422 naming the first fields)."""
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ApiError(
            422,
            f"{model.__name__}: {describe_errors(e.errors(include_url=False), e.error_count())}",
            code="request.schema",
            hint="see /openapi.json",
        ) from None
    except RecursionError:
        raise _too_deep(model.__name__) from None


def msgpack_response(value: Any) -> Response:
    """A msgpack answer (bytes stay bytes)."""
    return Response(msgpack.packb(value, use_bin_type=True), media_type=MSGPACK)


# ------------------------------------------------------------------------ errors
def _cut(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return f"{text[:MAX_MESSAGE_CHARS]}... ({len(text)} characters in all)"


def error_response(
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error answer in the shared shape (``{"error": {code, message, hint}}``)."""
    return JSONResponse(
        error_body(code, _cut(message), None if hint is None else _cut(hint)),
        status_code=status,
        headers=headers,
    )


async def on_api_error(request: Request, exc: Exception) -> Response:
    """ApiError -> its status; PlanError -> 422; a lost lease -> 503; other
    ShoalErrors -> 400."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.hint, exc.headers)
    assert isinstance(exc, ShoalError)
    if isinstance(exc, LeaseLost):  # a standby (or fenced) coordinator: try another
        return error_response(503, exc.code, exc.message, exc.hint, {"Retry-After": "1"})
    status = 422 if isinstance(exc, PlanError) else 400
    return error_response(status, exc.code, exc.message, exc.hint)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's request validation (query and path parameters) -> 422 in the shared
    shape, naming the first few fields."""
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "request.schema", describe_errors(exc.errors()), "see /openapi.json")


def _routes(routes: Iterable[Any]) -> Iterator[BaseRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _routes(included.routes)
        elif isinstance(route, BaseRoute):
            yield route


def _allowed_methods(request: Request) -> str:
    scope = {**request.scope, "method": "GET"}
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        if route.matches(scope)[0] is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (unknown route, 405, 413, ...) in the shared shape; a 405
    says in ``Allow`` which methods the path has."""
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, TooLarge):
        return error_response(413, "request.too_large", exc.detail, exc.hint)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return error_response(
        exc.status_code, f"http.{exc.status_code}", str(exc.detail), None, headers
    )


async def on_internal_error(request: Request, exc: Exception) -> Response:
    """Anything else: 500 without internals (they go to the coordinator's log); a write
    that found the disk full: 507 ``storage.full``."""
    if (full := storage_full(exc, f"{request.method} {request.url.path}")) is not None:
        return error_response(full.status, full.code, full.message, full.hint)
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error; see the coordinator's log")


# ------------------------------------------------------------------- size limits
#: The body limit of routes whose bodies are small by nature (no body at all, an
#: enrolment): a request to them can never make the coordinator read or parse much.
SMALL_BODY_BYTES = 64 * 1024
#: A heartbeat lists the instances its node runs: at ~70 bytes an id, a few thousand.
HEARTBEAT_BODY_BYTES = 256 * 1024
#: Routes that may carry up to the coordinator's --max-request-mb: each reads its body
#: only after authentication, and decodes a large one in a worker thread.
_LARGE = re.compile(r"^/v1/(swarms|world|instances/.+/done)$")


def body_limit(method: str, path: str, limit: int) -> int | None:
    """The most bytes a request to ``method path`` may send (None: no limit, streamed).

    Blob uploads stream to disk; submissions, world calls and ``done`` reports may be as
    large as ``limit`` (``--max-request-mb``); a heartbeat has
    :data:`HEARTBEAT_BODY_BYTES`, and every other route (an enrolment, or no body at
    all) :data:`SMALL_BODY_BYTES`.
    """
    if method == "PUT" and path.startswith("/v1/blobs/"):
        return None
    if method == "POST" and _LARGE.match(path):
        return limit
    if method == "POST" and path == "/v1/nodes/heartbeat":
        return min(limit, HEARTBEAT_BODY_BYTES)
    return min(limit, SMALL_BODY_BYTES)


class TooLarge(StarletteHTTPException):
    """A request body over the limit (an HTTPException so FastAPI passes it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes, this route's limit")
        self.hint = (
            "send large values as blobs (PUT /v1/blobs/{digest}); submissions, world calls "
            "and done reports may grow to --max-request-mb"
        )


class SizeLimit:
    """Answers 413 for a request body over its route's limit (:func:`body_limit`), as
    declared or as it streams in; blob uploads are exempt (they stream to disk)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = None
        if scope["type"] == "http":
            limit = body_limit(scope["method"], scope["path"], self.limit)
        if limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    exc = TooLarge(limit)
                    # Connection: close, as the body is left unread.
                    resp = error_response(
                        413, "request.too_large", exc.detail, exc.hint, {"Connection": "close"}
                    )
                    await resp(scope, receive, send)
                    return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(limit)
            return message

        await self.app(scope, limited, send)
