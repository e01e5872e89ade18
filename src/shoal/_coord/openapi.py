"""What the coordinator's OpenAPI spec (``/openapi.json``) says beyond FastAPI's own:
request bodies the routes read themselves (after authentication, JSON or msgpack), the
error answers each route gives with their one body schema, and the integer bounds.

A route declares its errors with :func:`answers`; its body with :func:`json_doc` or
:func:`msgpack_doc`, whose models :func:`install` adds to the spec's components.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from shoal._api.schemas import DIGEST, ErrorBody

MSGPACK = "application/msgpack"
#: The largest integer a query parameter takes: the store keeps 64-bit integers.
INT64_MAX = 2**63 - 1

#: An integer query parameter that is at least 0 and fits the store (422 otherwise).
Seq = Annotated[int, Query(ge=0, le=INT64_MAX)]
#: The same, optional.
OptSeq = Annotated[int | None, Query(ge=0, le=INT64_MAX)]
#: A ``sha256:<64 hex>`` digest in the path; documented, and checked by the route (400).
Digest = Annotated[
    str, Path(description="sha256:<64 lowercase hex>", json_schema_extra={"pattern": DIGEST})
]

_WHY = {
    400: "Malformed input: a body that is not JSON/msgpack or has the wrong content type, "
    "a malformed digest, a missing bundle or blob.",
    401: "A missing or wrong bearer token.",
    403: "Not yours: a node acting on another node's instance, or enrolling as a node id "
    "it does not own; a world value naming a blob its node does not hold.",
    404: "An unknown id (swarm, instance, task, global, bundle, blob).",
    409: "A conflict with the current state.",
    413: "The request body exceeds this route's limit, or a map or list has too many entries.",
    422: "The request does not match its schema (the first few fields are named), or is "
    "nested too deeply.",
    429: "Too many failed authentications from this address: retry after Retry-After.",
    507: "The coordinator's storage is full (a blob or database write found no space).",
}
_BODIES: dict[str, type[BaseModel]] = {}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each error status it gives, with the error body. A
    route that checks a token (401) may also answer 429 (too many failures from the
    caller's address)."""
    if 401 in statuses and 429 not in statuses:
        statuses = (*statuses, 429)
    return {s: {"model": ErrorBody, "description": _WHY[s]} for s in statuses}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    _BODIES[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body that the route reads itself."""
    content = {"application/json": {"schema": _ref(model)}}
    return {"requestBody": {"required": True, "content": content}}


def msgpack_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a msgpack request body."""
    return {"requestBody": {"required": True, "content": {MSGPACK: {"schema": _ref(model)}}}}


def json_or_msgpack_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a request body sent as JSON or as msgpack."""
    content = {media: {"schema": _ref(model)} for media in ("application/json", MSGPACK)}
    return {"requestBody": {"required": True, "content": content}}


def octets_doc(description: str) -> dict[str, Any]:
    """``openapi_extra`` documenting a raw, streamed request body."""
    schema = {"type": "string", "format": "binary"}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/octet-stream": {"schema": schema}},
        }
    }


def binary_answer(media: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry for a 200 answer of raw bytes of type ``media``."""
    schema = {"type": "string", "format": "binary"}
    return {200: {"description": "The bytes.", "content": {media: {"schema": schema}}}}


def _drop_default_422(spec: dict[str, Any]) -> None:
    # FastAPI documents a 422 of its own shape on every route with parameters; ours have
    # the error body and are declared (answers) only where a parameter can fail.
    for item in spec.get("paths", {}).values():
        for op in item.values():
            doc = op.get("responses", {}).get("422", {})
            schema = doc.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref", "").endswith("/HTTPValidationError"):
                del op["responses"]["422"]
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install(app: FastAPI) -> None:
    """Serve the spec with the bodies of :func:`json_doc` / :func:`msgpack_doc` in its
    components (built once, on the first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, model in sorted(_BODIES.items()):
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(doc.pop("$defs", {}))
                schemas[name] = doc
            _drop_default_422(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
