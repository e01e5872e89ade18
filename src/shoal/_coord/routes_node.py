"""Node routes: enrolment, heartbeats, instructions, reports, world calls, blobs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from shoal._api.identity import CredentialBody
from shoal._api.schemas import (
    BlobAnswer,
    DoneBody,
    EnrolAnswer,
    EnrolBody,
    HeartbeatAnswer,
    HeartbeatBody,
    Instructions,
    Ok,
    RunInstruction,
    WorldRequest,
)
from shoal._coord.blobs import principal, put_streamed, readable_file, size_of
from shoal._coord.errors import ApiError
from shoal._coord.http import (
    Bearer,
    any_auth,
    auth_failed,
    coordinator,
    msgpack_body,
    msgpack_doc,
    msgpack_response,
    node_auth,
    source_allowed,
    validate,
)
from shoal._coord.schemas import WORLD_ARGS, Batch
from shoal._coord.state import Offer
from shoal._coord.storage import storage_full
from shoal._runtime.protocol import error_payload
from shoal._store.blobs import BlobStore

router = APIRouter(prefix="/v1", tags=["nodes"])
log = logging.getLogger("shoal.coordinator")

MAX_WAIT_S = 60.0


def blobs(request: Request) -> BlobStore:
    """The app's blob store."""
    store: BlobStore = request.app.state.blobs
    return store


def _offer(datasets: list[str], gpu: bool, images: list[str] | None) -> Offer:
    return Offer(frozenset(datasets), gpu, None if images is None else frozenset(images))


@router.post("/nodes/enrol", response_model=EnrolAnswer)
async def enrol(
    request: Request, body: EnrolBody, creds: Bearer, source: str = Depends(source_allowed)
) -> EnrolAnswer:
    """Enrol a node; answers its credential (shown once).

    A new node id enrols with a join token; a known one only with its current
    credential (``Authorization: Bearer``) or a join token the operator bound to it.
    """
    offer = _offer(body.datasets, body.gpu, body.images)
    credential = None if creds is None or not creds.credentials else creds.credentials
    try:
        issued = await run_in_threadpool(
            coordinator(request).admit,
            body.node_id,
            offer,
            body.join_token,
            credential,
            body.credential,
        )
    except ApiError as e:
        if e.status in (401, 403):
            log.warning("refused enrolment of node %s from %s: %s", body.node_id, source, e)
            raise auth_failed(request, e) from None
        raise
    return EnrolAnswer(node_id=body.node_id, credential=issued)


@router.post("/nodes/credential", response_model=EnrolAnswer)
async def rotate_credential(
    request: Request,
    creds: Bearer,
    body: CredentialBody | None = None,
    node_id: str = Depends(node_auth),
) -> EnrolAnswer:
    """A new credential for the calling node (the one it proposes, or one made here);
    the one that authorised the request stops working at once. Repeating the request
    with the proposed credential as bearer answers the same."""
    assert creds is not None  # node_auth checked it
    issued = await run_in_threadpool(
        coordinator(request).rotate_credential,
        node_id,
        creds.credentials,
        None if body is None else body.credential,
    )
    return EnrolAnswer(node_id=node_id, credential=issued)


@router.post("/nodes/heartbeat", response_model=HeartbeatAnswer)
async def heartbeat(
    request: Request, body: HeartbeatBody, node_id: str = Depends(node_auth)
) -> HeartbeatAnswer:
    """The node is alive and offers ``datasets``, ``gpu`` and ``images``."""
    coord = coordinator(request)
    offer = _offer(body.datasets, body.gpu, body.images)
    await run_in_threadpool(coord.heartbeat, node_id, offer, body.session, body.running)
    return HeartbeatAnswer(heartbeat_timeout_s=coord.heartbeat_timeout_s)


@router.get("/nodes/instructions", response_model=Instructions)
async def instructions(
    request: Request,
    wait: float = Query(25.0, ge=0.0, le=MAX_WAIT_S),
    after: int | None = Query(None, ge=0),
    node_id: str = Depends(node_auth),
) -> Instructions:
    """This node's pending instructions; long-polls up to ``wait`` seconds.

    ``after`` acknowledges every instruction up to that ``seq``; the others are
    delivered again (without it, each is delivered once).
    """
    coord = coordinator(request)
    # A poll that arrives is a heartbeat too. Its end is not: the node may have been cut
    # off meanwhile, and touching it then would bring a lost node back while it is away.
    await run_in_threadpool(coord.touch, node_id)
    items = await coord.queues.take(node_id, wait, after)
    swarms = {i.swarm_id for i in items if isinstance(i, RunInstruction)}
    if swarms:  # versions as of delivery: the latest the instance can know about
        versions = {s: await run_in_threadpool(coord.store.global_versions, s) for s in swarms}
        items = [
            i.model_copy(update={"global_versions": versions[i.swarm_id]})
            if isinstance(i, RunInstruction)
            else i
            for i in items
        ]
    return Instructions(items)


@router.post("/instances/{instance_id:path}/started", response_model=Ok)
async def started(request: Request, instance_id: str, node_id: str = Depends(node_auth)) -> Ok:
    """The node began running the instance."""
    await run_in_threadpool(coordinator(request).started, node_id, instance_id)
    return Ok()


@router.post("/instances/{instance_id:path}/done", response_model=Ok)
async def done(
    request: Request, instance_id: str, body: DoneBody, node_id: str = Depends(node_auth)
) -> Ok:
    """The instance ended; a repeat is acknowledged and ignored."""
    await run_in_threadpool(
        coordinator(request).done,
        node_id,
        instance_id,
        body.ok,
        body.error,
        body.traceback,
        body.kind,
    )
    return Ok()


def _check_blobs(store: BlobStore, args: Mapping[str, Any]) -> None:
    value = args.get("value")
    if isinstance(value, dict) and "blob" in value:
        digest, length = value["blob"], value["length"]
        size = size_of(store, digest)
        if size is None:
            raise ApiError(
                400,
                f"blob {digest} is not stored",
                code="world.blob",
                hint="upload it with PUT /v1/blobs/{digest} first",
            )
        if size != length:
            raise ApiError(422, f"blob {digest} has {size} bytes, not {length}", code="world.blob")


@router.post("/world", openapi_extra=msgpack_doc(WorldRequest), response_class=Response)
async def world(request: Request, node_id: str = Depends(node_auth)) -> Response:
    """One world operation of an instance (msgpack). Task-level errors are data."""
    req = await msgpack_body(request, WorldRequest)
    model = WORLD_ARGS.get(req.op)
    if model is None:
        raise ApiError(
            422,
            f"unknown world operation {req.op!r}",
            code="world.op",
            hint=f"one of {sorted(WORLD_ARGS)} (the node agent answers the local ones)",
        )
    parsed = validate(model, req.args)
    coord = coordinator(request)
    calls: list[tuple[str, dict[str, Any]]]
    if isinstance(parsed, Batch):
        calls = [
            (c["op"], validate(WORLD_ARGS[c["op"]], c["args"]).model_dump(exclude_unset=True))
            for c in parsed.calls
        ]
    else:
        args = parsed.model_dump(exclude_unset=True)
        _check_blobs(blobs(request), args)
        calls = [(req.op, args)]
    try:
        value = await run_in_threadpool(coord.world_calls, node_id, req.instance_id, calls)
    except ApiError:
        raise
    except Exception as e:  # the task's request failed: the task sees the error
        if (full := storage_full(e, f"{req.op} of {req.instance_id}")) is not None:
            raise full from None  # not the task's doing: 507, which fails the instance
        return msgpack_response({"error": error_payload(e)})
    return msgpack_response({"ok": value})


@router.get("/bundles/{digest}", response_class=FileResponse)
async def bundle(request: Request, digest: str, who: str = Depends(any_auth)) -> FileResponse:
    """A module bundle (zip) by digest: of a module the node runs, or of the user's
    swarms (404 otherwise, and for a value's digest)."""
    access = coordinator(request).access
    holder = principal(request, who)
    path = await run_in_threadpool(readable_file, blobs(request), access, holder, digest, "bundle")
    return FileResponse(path, media_type="application/zip")


@router.put("/blobs/{digest}", response_model=BlobAnswer)
async def put_blob(request: Request, digest: str, who: str = Depends(any_auth)) -> BlobAnswer:
    """Store a blob streamed in chunks; 400 if the content does not match the digest."""
    length = await put_streamed(blobs(request), digest, request.stream())
    await run_in_threadpool(coordinator(request).access.uploaded, principal(request, who), digest)
    return BlobAnswer(digest=digest, length=length)


@router.get("/blobs/{digest}", response_class=FileResponse)
async def get_blob(request: Request, digest: str, who: str = Depends(any_auth)) -> FileResponse:
    """A value blob's bytes, streamed: one the node uploaded or was given, or one of
    the user's swarms (404 otherwise)."""
    access = coordinator(request).access
    holder = principal(request, who)
    path = await run_in_threadpool(readable_file, blobs(request), access, holder, digest)
    return BigChunkFileResponse(path, media_type="application/octet-stream")


class BigChunkFileResponse(FileResponse):
    """Starlette reads a file in 64 KiB pieces, one thread hop each; 4 MiB pieces keep a
    large blob's download close to the speed of the socket (memory stays bounded)."""

    chunk_size = 4 * 1024 * 1024
