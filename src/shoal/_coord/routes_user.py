"""User routes: submit and stop swarms, status (also as server-sent events), logs,
metrics, globals and results, nodes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from shoal._api.records import (
    InstanceRecord,
    LogRecord,
    MetricRecord,
    NodeRecord,
    SwarmStatus,
    SwarmSummary,
    TaskCounts,
    failure_record,
    log_record,
    metric_record,
)
from shoal._api.schemas import Health, Ok, Story, SubmitBody, SwarmAnswer
from shoal._bundle import MANIFEST
from shoal._coord.driver import Coordinator
from shoal._coord.errors import ApiError, not_found
from shoal._coord.http import coordinator, msgpack_body, msgpack_response, user_auth
from shoal._coord.openapi import MSGPACK, OptSeq, Seq, answers, binary_answer, msgpack_doc
from shoal._coord.routes_node import MAX_WAIT_S, blobs
from shoal._coord.state import NodeReport, SwarmReport
from shoal._engine.capacity import Capacity
from shoal._plan import Plan, load_plan
from shoal._store.blobs import Blobs
from shoal._version import __version__

router = APIRouter(
    prefix="/v1", tags=["users"], dependencies=[Depends(user_auth)], responses=answers(401)
)
public = APIRouter(prefix="/v1", tags=["health"])

SSE_KEEPALIVE_S = 15.0


@public.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    """Liveness and role (active or standby); needs no token."""
    return Health(version=__version__, role=request.app.state.coord.role)


def _check_bundle(digest: str, data: bytes) -> None:
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ApiError(
            422,
            f"bundle {digest} has sha256 {actual}",
            code="swarm.bundle",
            hint="send each bundle under the digest of its bytes",
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.getinfo(MANIFEST)
    except (zipfile.BadZipFile, KeyError):
        raise ApiError(
            422,
            f"bundle {digest} is not a shoal module bundle (a zip with {MANIFEST})",
            code="swarm.bundle",
            hint="build plans and bundles with `shoal export` or shoal.Client",
        ) from None


def _prepare(plan_text: str, bundles: dict[str, bytes], store: Blobs) -> Plan:
    """Check and store a submission (in a worker thread: it parses and hashes
    megabytes)."""
    try:
        plan = load_plan(plan_text)  # PlanError -> 422
    except RecursionError:
        raise ApiError(
            422,
            "the plan document is nested too deeply to decode",
            code="request.too_deep",
            hint="build plans with `shoal export` or shoal.Client",
        ) from None
    for digest, data in bundles.items():
        _check_bundle(digest, data)
    for data in bundles.values():
        store.put_bytes(data)
    digests = {m.digest: m.name for m in plan.modules.values()}  # modules may share one
    missing = [f"{name} ({d})" for d, name in digests.items() if not store.exists(d)]
    if missing:
        raise ApiError(
            400,
            f"the bundles of modules {', '.join(missing)} are missing",
            code="swarm.bundle_missing",
            hint="send every module's bundle under its digest in 'bundles'",
        )
    return plan


@router.post(
    "/swarms",
    response_model=SwarmAnswer,
    openapi_extra=msgpack_doc(SubmitBody),
    responses=answers(400, 413, 422),
)
async def submit(request: Request) -> SwarmAnswer:
    """Submit a plan with its bundles (msgpack)."""
    body = await msgpack_body(request, SubmitBody)
    plan = await run_in_threadpool(_prepare, body.plan, body.bundles, blobs(request))
    swarm_id = await run_in_threadpool(
        coordinator(request).submit, plan, body.seed, "user", body.task_timeout_s
    )
    return SwarmAnswer(swarm_id=swarm_id)


@router.get("/swarms", response_model=list[SwarmSummary])
async def swarms(request: Request) -> list[SwarmSummary]:
    """Every swarm, newest first."""
    records = await run_in_threadpool(coordinator(request).store.swarms)
    return [
        SwarmSummary(
            swarm_id=r.swarm_id,
            name=r.name,
            status=r.status,
            iteration=r.iteration,
            reason=r.reason,
            created=r.created,
        )
        for r in records
    ]


def status_doc(report: SwarmReport) -> SwarmStatus:
    """The status document of a swarm, from the coordinator's record and engine view."""
    rec, view = report.record, report.view
    if view is None:  # recorded, but the engine never saw it (see Coordinator.recover)
        return SwarmStatus(
            rec.swarm_id, rec.name, rec.status, rec.iteration, rec.reason, rec.created
        )
    return SwarmStatus(
        rec.swarm_id,
        rec.name,
        view.status,
        view.iteration,
        view.reason,
        rec.created,
        failures=tuple(failure_record(f) for f in view.failures),
        tasks={
            a: TaskCounts(
                c.scheduled,
                c.running,
                c.succeeded,
                c.failed,
                module=view.plan.module_of(a).name,
                version=view.plan.module_of(a).version,
            )
            for a, c in report.counts.items()
        },
        waiting=dict(report.waiting),
        running=tuple(
            InstanceRecord(
                i.instance_id,
                i.alias,
                i.node_id,
                i.iteration,
                i.attempt,
                i.state.value,
                i.since,
                i.timeout_s,
            )
            for i in sorted(report.running, key=lambda i: i.since)
        ),
    )


def _status(coord: Coordinator, swarm_id: str) -> SwarmStatus:
    return status_doc(coord.status(swarm_id))


@router.get("/swarms/{swarm_id}", response_model=SwarmStatus, responses=answers(404))
async def status(request: Request, swarm_id: str) -> SwarmStatus:
    """Status, failures with tracebacks, and task counts of the current iteration."""
    return await run_in_threadpool(_status, coordinator(request), swarm_id)


@router.get("/instances/{instance_id:path}/story", response_model=Story, responses=answers(404))
async def story(request: Request, instance_id: str) -> Story:
    """What happened to one instance: each transition and engine decision, with the
    time and the id of the event that caused it."""
    lines = await run_in_threadpool(coordinator(request).story, instance_id)
    return Story(instance_id=instance_id, story=lines)


@router.get(
    "/swarms/{swarm_id}/events",
    response_class=StreamingResponse,
    responses={**answers(404), **binary_answer("text/event-stream")},
)
async def events(request: Request, swarm_id: str) -> StreamingResponse:
    """Server-sent events: the swarm's status whenever it changes, until it ends."""
    coord = coordinator(request)
    first = await run_in_threadpool(_status, coord, swarm_id)  # 404 before streaming

    async def stream() -> AsyncIterator[str]:
        st, last = first, ""
        while True:
            seen = coord.changes.generation
            text = json.dumps(st.to_dict(), sort_keys=True)
            if text != last:
                yield f"data: {text}\n\n"
                last = text
            if st.status != "running" or coord.closing or await request.is_disconnected():
                return
            after = await coord.changes.wait(seen, SSE_KEEPALIVE_S)
            if after == seen:
                yield ": keep-alive\n\n"
            st = await run_in_threadpool(_status, coord, swarm_id)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get("/swarms/{swarm_id}/logs", response_model=list[LogRecord], responses=answers(404, 422))
async def logs(
    request: Request,
    swarm_id: str,
    node: str | None = None,
    task: str | None = None,
    level: str | None = None,
    iteration: OptSeq = None,
    after: Seq = 0,
    wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S),
    limit: int = Query(10_000, ge=1, le=100_000),
) -> list[LogRecord]:
    """Log records with ``seq > after``; with ``wait`` it long-polls for new ones."""
    coord = coordinator(request)
    if await run_in_threadpool(coord.store.swarm_get, swarm_id) is None:
        raise not_found("swarm", swarm_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        seen = coord.log_changes.generation
        rows = await run_in_threadpool(
            coord.store.logs, swarm_id, node, task, level, iteration, after, limit
        )
        left = deadline - loop.time()
        if rows or left <= 0 or coord.closing:
            plan = await run_in_threadpool(coord.plan_of, swarm_id) if rows else None
            return [log_record(r, plan) for r in rows]
        await coord.log_changes.wait(seen, left)


@router.get("/swarms/{swarm_id}/metrics", response_model=list[MetricRecord], responses=answers(404))
async def metrics(
    request: Request,
    swarm_id: str,
    name: str | None = None,
    node: str | None = None,
    task: str | None = None,
) -> list[MetricRecord]:
    """Metric values, filtered."""
    store = coordinator(request).store
    if await run_in_threadpool(store.swarm_get, swarm_id) is None:
        raise not_found("swarm", swarm_id)
    rows = await run_in_threadpool(store.metrics, swarm_id, name, node, task)
    return [metric_record(r) for r in rows]


@router.get(
    "/swarms/{swarm_id}/globals/{key}",
    response_class=Response,
    responses={**answers(404), **binary_answer(MSGPACK)},
)
async def global_value(request: Request, swarm_id: str, key: str) -> Response:
    """msgpack ``{version, value: wire}``."""
    store = coordinator(request).store
    if await run_in_threadpool(store.swarm_get, swarm_id) is None:
        raise not_found("swarm", swarm_id)
    found = await run_in_threadpool(store.global_get, swarm_id, key)
    if found is None:
        raise not_found("global", key)
    return msgpack_response({"version": found[0], "value": found[1]})


def _plan(request: Request, swarm_id: str) -> tuple[Plan, int]:
    coord = coordinator(request)
    report = coord.status(swarm_id)
    if report.view is None:
        return load_plan(report.record.plan), report.record.iteration
    return report.view.plan, report.view.iteration


@router.get(
    "/swarms/{swarm_id}/results/{tag}",
    response_class=Response,
    responses={**answers(404, 422), **binary_answer(MSGPACK)},
)
async def results(
    request: Request,
    swarm_id: str,
    tag: str,
    alias: str | None = None,
    iteration: OptSeq = None,
) -> Response:
    """msgpack ``[{alias, node_id, iteration, value: wire}]`` (default: the last
    started iteration, every task)."""
    plan, current = await run_in_threadpool(_plan, request, swarm_id)
    aliases = [t.alias for t in plan.tasks]
    if alias is not None and alias not in aliases:
        raise not_found("task", alias, hint=f"tasks of this swarm: {aliases}")
    it = current if iteration is None else iteration
    store = coordinator(request).store
    rows = []
    for a in [alias] if alias is not None else aliases:
        rows += await run_in_threadpool(store.results_of_task, swarm_id, it, a, tag)
    return msgpack_response(
        [
            {"alias": r.alias, "node_id": r.node_id, "iteration": r.iteration, "value": r.value}
            for r in rows
        ]
    )


@router.post("/swarms/{swarm_id}/stop", response_model=Ok, responses=answers(404))
async def stop(request: Request, swarm_id: str) -> Ok:
    """Stop a swarm now (a no-op once it finished)."""
    await run_in_threadpool(coordinator(request).stop_swarm, swarm_id)
    return Ok()


def node_doc(report: NodeReport) -> NodeRecord:
    """One row of ``GET /v1/nodes``: the engine's view where it has one, else the record."""
    rec, view = report.record, report.view
    if view is None:
        images = None if rec.images is None else tuple(rec.images)
        return NodeRecord(
            rec.node_id, False, tuple(rec.datasets), rec.gpu, images, report.last_seen, 0
        )
    images = None if view.images is None else tuple(sorted(view.images))
    cap = view.capacity or Capacity()
    return NodeRecord(
        rec.node_id,
        view.connected,
        tuple(sorted(view.datasets)),
        view.gpu,
        images,
        report.last_seen,
        view.running,
        cpu=cap.cpu,
        memory=cap.memory,
        gpus=cap.gpu,
        gpu_memory=cap.gpu_memory,
    )


def _nodes(coord: Coordinator) -> list[NodeRecord]:
    return [node_doc(r) for r in coord.nodes()]


@router.get("/nodes", response_model=list[NodeRecord])
async def nodes(request: Request) -> list[NodeRecord]:
    """Every node with its offer, connection state and running instances."""
    return await run_in_threadpool(_nodes, coordinator(request))
