"""Node routes: enrolment, heartbeats, instructions, reports, world calls, blobs."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
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
    NodeFacts,
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
    body_decoder,
    coordinator,
    json_body,
    msgpack_body,
    msgpack_response,
    node_auth,
    source_allowed,
    validate,
)
from shoal._coord.openapi import (
    MSGPACK,
    Digest,
    OptSeq,
    answers,
    binary_answer,
    json_doc,
    json_or_msgpack_doc,
    msgpack_doc,
    octets_doc,
)
from shoal._coord.schemas import WORLD_ARGS, Batch, Deferred
from shoal._coord.state import Offer
from shoal._coord.storage import storage_full
from shoal._engine.capacity import Capacity
from shoal._runtime.protocol import error_payload
from shoal._store.blobs import Blobs

log = logging.getLogger("shoal.coordinator")
router = APIRouter(prefix="/v1", tags=["nodes"])
log = logging.getLogger("shoal.coordinator")

MAX_WAIT_S = 60.0


def blobs(request: Request) -> Blobs:
    """The app's blob store."""
    store: Blobs = request.app.state.blobs
    return store


def _offer(body: EnrolBody | HeartbeatBody) -> Offer:
    images = None if body.images is None else frozenset(body.images)
    return Offer(frozenset(body.datasets), body.gpu, images, capacity_of(body.facts))


def capacity_of(facts: NodeFacts | None) -> Capacity | None:
    """The engine's capacity of a node's advertised facts (None: none advertised)."""
    if facts is None:
        return None
    memories = [g.memory for g in facts.gpus if g.memory is not None]
    return Capacity(
        cpu=facts.cpu,
        memory=facts.memory,
        gpu=len(facts.gpus),
        gpu_memory=max(memories) if memories else None,
    )


@router.post(
    "/nodes/enrol",
    response_model=EnrolAnswer,
    openapi_extra=json_doc(EnrolBody),
    responses=answers(400, 401, 403, 413, 422, 429),
)
async def enrol(
    request: Request, creds: Bearer, source: str = Depends(source_allowed)
) -> EnrolAnswer:
    """Enrol a node; answers its credential (shown once).

    A new node id enrols with a join token; a known one only with its current
    credential (``Authorization: Bearer``) or a join token the operator bound to it.
    """
    body = await json_body(request, EnrolBody)  # a few KiB at most (http.body_limit)
    offer = _offer(body)
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


@router.post("/nodes/credential", response_model=EnrolAnswer, responses=answers(400, 401, 413, 422))
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


@router.post(
    "/nodes/heartbeat",
    response_model=HeartbeatAnswer,
    openapi_extra=json_doc(HeartbeatBody),
    responses=answers(400, 401, 413, 422),
)
async def heartbeat(request: Request, node_id: str = Depends(node_auth)) -> HeartbeatAnswer:
    """The node is alive and offers ``datasets``, ``gpu`` and ``images``.

    The fast path: ``node_auth`` stamped the node seen on arrival, and a heartbeat that
    changes neither the node's offer nor its agent session is answered right here,
    without a worker thread or the engine lock; the full work (the first session after
    a join, what it runs, ``last_seen`` in the store) follows in the background after a
    join and every 30 s. Liveness does not wait for the load of the swarms.
    """
    coord = coordinator(request)
    body = await json_body(request, HeartbeatBody)
    offer = _offer(body)
    args = (node_id, offer, body.session, body.running)
    if not coord.heartbeat_unchanged(node_id, offer, body.session):
        await run_in_threadpool(coord.heartbeat, *args)
    elif coord.check_due(node_id):  # its session, what it runs, last_seen: not awaited
        _background(run_in_threadpool(coord.heartbeat, *args), f"heartbeat of {node_id}")
    coord.beat(node_id)  # after a first heartbeat made its state
    return HeartbeatAnswer(heartbeat_timeout_s=coord.heartbeat_timeout_s)


_BACKGROUND: set[asyncio.Task[Any]] = set()


def _background(work: Coroutine[Any, Any, Any], what: str) -> None:
    """Run ``work`` without awaiting it (its failure is logged)."""
    task = asyncio.ensure_future(work)
    _BACKGROUND.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _BACKGROUND.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("%s failed", what, exc_info=t.exception())

    task.add_done_callback(done)


@router.get("/nodes/instructions", response_model=Instructions, responses=answers(401, 422))
async def instructions(
    request: Request,
    after: OptSeq = None,
    wait: float = Query(25.0, ge=0.0, le=MAX_WAIT_S),
    node_id: str = Depends(node_auth),
) -> Instructions:
    """This node's pending instructions; long-polls up to ``wait`` seconds.

    ``after`` acknowledges every instruction up to that ``seq``; the others are
    delivered again (without it, each is delivered once).
    """
    coord = coordinator(request)
    # A poll that arrives is a heartbeat too (node_auth stamped it; a lost node joins
    # again here). Its end is not: the node may have been cut off meanwhile, and touching
    # it then would bring a lost node back while it is away.
    if not coord.touch_unchanged(node_id):
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


@router.post(
    "/instances/{instance_id:path}/started", response_model=Ok, responses=answers(401, 403, 404)
)
async def started(request: Request, instance_id: str, node_id: str = Depends(node_auth)) -> Ok:
    """The node began running the instance."""
    await run_in_threadpool(coordinator(request).started, node_id, instance_id)
    return Ok()


@router.post(
    "/instances/{instance_id:path}/done",
    response_model=Ok,
    openapi_extra=json_or_msgpack_doc(DoneBody),
    responses=answers(400, 401, 403, 404, 413, 422),
)
async def done(request: Request, instance_id: str, node_id: str = Depends(node_auth)) -> Ok:
    """The instance ended; a repeat is acknowledged and ignored. ``started``: it also
    started (no ``started`` report was sent for it). ``calls``: world calls it made last
    (``results.add``), run before its end is recorded; then the body is msgpack."""
    decode = await body_decoder(request, DoneBody)
    coord, store = coordinator(request), blobs(request)

    def report() -> None:  # one worker-thread hop: a worker's result comes with its end
        body = decode()
        calls: list[tuple[str, dict[str, Any]]] = []
        if body.calls:
            calls = _batch_calls(validate(Deferred, {"calls": body.calls}))
            for _, args in calls:
                _check_blobs(store, args)
        coord.done(
            node_id,
            instance_id,
            body.ok,
            body.error,
            body.traceback,
            body.kind,
            body.started,
            calls,
        )

    await run_in_threadpool(report)
    return Ok()


def _batch_calls(batch: Batch | Deferred) -> list[tuple[str, dict[str, Any]]]:
    return [
        (c["op"], validate(WORLD_ARGS[c["op"]], c["args"]).model_dump(exclude_unset=True))
        for c in batch.calls
    ]


def _check_blobs(store: Blobs, args: Mapping[str, Any]) -> None:
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


@router.post(
    "/world",
    openapi_extra=msgpack_doc(WorldRequest),
    response_class=Response,
    responses={**answers(400, 401, 403, 404, 413, 422, 507), **binary_answer(MSGPACK)},
)
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
        calls = await run_in_threadpool(_batch_calls, parsed)
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


@router.get(
    "/bundles/{digest}",
    response_class=FileResponse,
    responses={**answers(400, 401, 404), **binary_answer("application/zip")},
)
async def bundle(request: Request, digest: Digest, who: str = Depends(any_auth)) -> Response:
    """A module bundle (zip) by digest: of a module the node runs, or of the user's
    swarms (404 otherwise, and for a value's digest)."""
    access = coordinator(request).access
    holder = principal(request, who)
    path = await run_in_threadpool(readable_file, blobs(request), access, holder, digest, "bundle")
    if path is None:
        return await streamed(blobs(request), digest, "application/zip")
    data = await small_files(request).read(path)
    if data is None:
        return FileResponse(path, media_type="application/zip")
    return Response(data, media_type="application/zip")


class SmallFiles:
    """Small files that never change (bundles, named by their digest) kept in memory,
    at most ``max_file`` bytes each and ``max_total`` in all (the least recently used
    go first).

    When a swarm's iteration starts, every node fetches its bundle at once: from a
    file, each answer costs several worker-thread hops, and thousands of them queue
    ahead of the nodes' reports. From here it costs none.
    """

    def __init__(self, max_file: int = 1 << 20, max_total: int = 64 << 20) -> None:
        self.max_file = max_file
        self.max_total = max_total
        self._data: OrderedDict[Path, bytes] = OrderedDict()
        self._total = 0

    async def read(self, path: Path) -> bytes | None:
        """The file's bytes, or None if it is larger than ``max_file``."""
        data = self._data.get(path)
        if data is not None:
            self._data.move_to_end(path)
            return data
        data = await run_in_threadpool(_read_small, path, self.max_file)
        if data is None:
            return None
        if path not in self._data:
            self._data[path] = data
            self._total += len(data)
        while self._total > self.max_total:
            _, dropped = self._data.popitem(last=False)
            self._total -= len(dropped)
        return data


def _read_small(path: Path, limit: int) -> bytes | None:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    return None if len(data) > limit else data


def small_files(request: Request) -> SmallFiles:
    """The app's :class:`SmallFiles` (made on first use)."""
    cache: SmallFiles | None = getattr(request.app.state, "small_files", None)
    if cache is None:
        cache = request.app.state.small_files = SmallFiles()
    return cache


@router.put(
    "/blobs/{digest}",
    response_model=BlobAnswer,
    openapi_extra=octets_doc("The blob's bytes, streamed; their sha256 must be the digest."),
    responses=answers(400, 401, 507),
)
async def put_blob(request: Request, digest: Digest, who: str = Depends(any_auth)) -> BlobAnswer:
    """Store a blob streamed in chunks; 400 if the content does not match the digest."""
    length = await put_streamed(blobs(request), digest, request.stream())
    await run_in_threadpool(coordinator(request).access.uploaded, principal(request, who), digest)
    return BlobAnswer(digest=digest, length=length)


@router.get(
    "/blobs/{digest}",
    response_class=FileResponse,
    responses={**answers(400, 401, 404), **binary_answer("application/octet-stream")},
)
async def get_blob(request: Request, digest: Digest, who: str = Depends(any_auth)) -> Response:
    """A value blob's bytes, streamed: one the node uploaded or was given, or one of
    the user's swarms (404 otherwise)."""
    access = coordinator(request).access
    holder = principal(request, who)
    path = await run_in_threadpool(readable_file, blobs(request), access, holder, digest)
    if path is None:
        return await streamed(blobs(request), digest, "application/octet-stream")
    return BigChunkFileResponse(path, media_type="application/octet-stream")


async def streamed(store: Blobs, digest: str, media_type: str) -> StreamingResponse:
    """A blob that is not a local file (object storage), streamed in 4 MiB pieces with
    its length; the request to the store is made here, in a worker thread, so a missing
    blob is a 404 rather than a broken stream."""
    size = await run_in_threadpool(store.size, digest)
    chunks = await run_in_threadpool(store.iter_chunks, digest, BigChunkFileResponse.chunk_size)
    return StreamingResponse(chunks, media_type=media_type, headers={"content-length": str(size)})


class BigChunkFileResponse(FileResponse):
    """Starlette reads a file in 64 KiB pieces, one thread hop each; 4 MiB pieces keep a
    large blob's download close to the speed of the socket (memory stays bounded)."""

    chunk_size = 4 * 1024 * 1024
