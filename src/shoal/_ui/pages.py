"""The dashboard's pages: a Starlette app over a :class:`~shoal._ui.source.Source`.

Every page is whole HTML from the server (readable with JavaScript off). With
JavaScript, ``static/dash.js`` listens to ``events`` (server-sent events: one message
whenever the source changes) and swaps the page's live sections for fresh ones, and
draws the charts with uPlot (shipped in ``static/``, never from a CDN).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from shoal._ui import charts, graph
from shoal._ui.auth import COOKIE, Session, Sessions
from shoal._ui.source import Source
from shoal._version import __version__

T = TypeVar("T")
STATIC = Path(__file__).parent / "static"
#: A live page gets a keep-alive comment this often, and its stream ends after
#: :data:`SSE_MAX_S` (the browser's EventSource reconnects at once): no stream is
#: held open forever, and a server that stops never waits for one.
SSE_KEEPALIVE_S = 15.0
SSE_MAX_S = 300.0
#: At most one message per this many seconds: a swarm of many nodes changes many times
#: a second, and each message makes every open page re-read itself.
SSE_MIN_INTERVAL_S = 1.0
MEMO_ENTRIES = 64  # reads shared by pages while nothing changed
#: A rendered page is shared by every session that asks for it while the source has not
#: changed, for at most this long (its "… s ago" texts age): open dashboards all re-read
#: on the same change message, and one render serves them all.
PAGE_FRESH_S = 2.0
#: Stands for the session's CSRF token in a shared render; each response gets its own.
_CSRF_SLOT = "\x00csrf-" + secrets.token_hex(8) + "\x00"
HEARTBEATS_LISTED = 10  # newest heartbeats listed under the node's chart
LOG_LINES = 300  # log records shown at once (the newest)
LEVELS = ("debug", "info", "warning", "error")

_env = Environment(
    loader=PackageLoader("shoal._ui", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _last_tick(t: float) -> float:
    """The latest announcement tick at or before ``t`` (monotonic seconds)."""
    return (t // SSE_MIN_INTERVAL_S) * SSE_MIN_INTERVAL_S


def _next_tick(t: float) -> float:
    """The first announcement tick after ``t``: live messages go out only on these."""
    return _last_tick(t) + SSE_MIN_INTERVAL_S


def _ago(t: float | None) -> str:
    if t is None:
        return "—"
    s = max(time.time() - t, 0.0)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _when(t: float | None) -> str:
    return "—" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _secs(s: float | None) -> str:
    return "—" if s is None else (f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s")


def _clock(t: float | None) -> str:
    return "—" if t is None else time.strftime("%H:%M:%S", time.localtime(t))


_env.filters.update(
    ago=_ago, when=_when, clock=_clock, secs=_secs, q=lambda s: quote(str(s), safe="")
)

# Security headers of every page: no script or style from anywhere but this server, no
# framing, no referrer (a URL never leaves), nothing cached.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form (no multipart: the forms here carry a few fields, and
    python-multipart would be one more dependency for nothing)."""
    body = (await request.body())[:16384]
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


class Dashboard:
    """The pages of one dashboard.

    Parameters
    ----------
    source
        What the pages read.
    sessions
        Who is signed in (None: no sign-in, for a simulator run served on loopback
        with ``--no-auth``).
    """

    def __init__(self, source: Source, sessions: Sessions | None) -> None:
        self.source = source
        self.sessions = sessions
        self._memo: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._memo_lock = threading.Lock()
        # Rendered pages by (generation, path, query): (html with the CSRF slot, status,
        # rendered at); and the renders under way, which later askers await (one render
        # per change however many dashboards ask at once).
        self._pages: OrderedDict[tuple[Any, ...], tuple[str, int, float]] = OrderedDict()
        # The newest render per (root, path, query), whatever the generation: shared by
        # live refetches until the next announcement tick.
        self._ticked: OrderedDict[tuple[Any, ...], tuple[str, int, float]] = OrderedDict()
        self._rendering: dict[tuple[Any, ...], asyncio.Future[tuple[str, int]]] = {}

    def read(self, key: tuple[Any, ...], fn: Callable[[], T]) -> T:
        """``fn()``, shared by every page that asks for ``key`` while the source has not
        changed: open dashboards refresh together on each change, and read once."""
        full = (self.source.generation(), *key)
        with self._memo_lock:
            if full in self._memo:
                self._memo.move_to_end(full)
                return cast(T, self._memo[full])
        value = fn()
        with self._memo_lock:
            self._memo[full] = value
            while len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return value

    # ------------------------------------------------------------ plumbing
    def _root(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _session(self, request: Request) -> Session | None:
        assert self.sessions is not None
        return self.sessions.get(request.cookies.get(COOKIE))

    def page(self, request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        """Render ``template`` with the common context."""
        session = None if self.sessions is None else self._session(request)
        html = _env.get_template(template).render(
            root=self._root(request),
            kind=self.source.kind,
            version=__version__,
            csrf=_CSRF_SLOT,
            signed_in=session is not None,
            auth=self.sessions is not None,
            path=request.url.path,
            **ctx,
        )
        request.state.shared_html = (html, status)
        return self._html(html, status, session)

    def _html(self, html: str, status: int, session: Session | None) -> Response:
        csrf = session.csrf if session is not None else ""
        return HTMLResponse(html.replace(_CSRF_SLOT, csrf), status_code=status, headers=_HEADERS)

    async def shared(
        self, request: Request, handler: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """``handler(request)`` for a GET of a page, rendered once per change of the
        source and shared by every session (only the CSRF token differs); while one
        render runs, the same request from other dashboards waits for it."""
        session = None if self.sessions is None else self._session(request)
        key = (
            self.source.generation(),  # read first: a render is never newer than its key
            self._root(request),
            request.url.path,
            request.url.query,
        )
        now = time.monotonic()
        hit = self._pages.get(key)
        if hit is not None and now - hit[2] < PAGE_FRESH_S:
            return self._html(hit[0], hit[1], session)
        # A live page's refetch (dash.js, after an event): every stream announces on the
        # same ticks, so a render made since the last tick already holds every change
        # announced, even if the source changed again since (the next tick says so).
        live = request.headers.get("x-shoal-live") == "1"
        shared = self._ticked.get(key[1:]) if live else None
        if shared is not None and shared[2] >= _last_tick(now):
            return self._html(shared[0], shared[1], session)
        running = self._rendering.get(key)
        if running is not None:
            html, status = await asyncio.shield(running)
            if status < 0:  # that answer was no page: ask on our own
                return await handler(request)
            return self._html(html, status, session)
        future: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            resp = await handler(request)
            page = getattr(request.state, "shared_html", None)
            if page is None:  # not a rendered page (a redirect): not shared
                future.set_result(("", -1))
                return resp
            entry = (page[0], page[1], now)
            self._pages[key] = entry
            self._ticked[key[1:]] = entry
            for memo in (self._pages, self._ticked):
                while len(memo) > MEMO_ENTRIES:
                    memo.popitem(last=False)
            future.set_result(page)
            return resp
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: a failed render is the asker's error only
            raise
        finally:
            del self._rendering[key]

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` for a signed-in browser; others go to the sign-in page."""

        async def run(request: Request) -> Response:
            if self.sessions is not None and self._session(request) is None:
                if request.method == "GET" and "text/event-stream" not in request.headers.get(
                    "accept", ""
                ):
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(
                        f"{self._root(request)}/login?{urlencode({'next': target})}", 303
                    )
                return Response("sign in first", 401, headers=_HEADERS)
            if request.method == "GET" and handler != self.events:
                return await self.shared(request, handler)
            return await handler(request)

        return run

    # ------------------------------------------------------------ sign-in
    async def login_form(self, request: Request) -> Response:
        """The sign-in form (the user token; never a node credential)."""
        return self.page(request, "login.html", next=request.query_params.get("next", ""))

    def _next(self, request: Request, target: str) -> str:
        root = self._root(request)
        # Only a path of this dashboard: never an open redirect.
        ok = target.startswith(f"{root}/") and not target.startswith("//")
        return target if ok and "\\" not in target else f"{root}/"

    async def login(self, request: Request) -> Response:
        """Check the token; on success set the session cookie and go on."""
        assert self.sessions is not None
        source = request.client.host if request.client is not None else "unknown"
        limiter = self.sessions.limiter
        wait = limiter.retry_after(source) if limiter is not None else None
        form = await _form(request)
        target = str(form.get("next", ""))
        if wait is not None:
            return self.page(
                request,
                "login.html",
                429,
                next=target,
                error=f"Too many failed sign-ins from {source}; try again in {wait} s.",
            )
        session = self.sessions.open(str(form.get("token", "")).strip())
        if session is None:
            if limiter is not None:
                limiter.failed(source)
            return self.page(
                request,
                "login.html",
                401,
                next=target,
                error="That is not the user token. Use the token in <state>/user-token "
                "(a node credential or join token cannot open the dashboard).",
            )
        resp = RedirectResponse(self._next(request, target), 303)
        resp.set_cookie(
            COOKIE,
            session.sid,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=f"{self._root(request)}/",
        )
        return resp

    async def logout(self, request: Request) -> Response:
        """End the session (a CSRF-checked post)."""
        assert self.sessions is not None
        session = self._session(request)
        form = await _form(request)
        if session is not None:
            if not Sessions.csrf_ok(session, form.get("csrf")):
                return Response("bad CSRF token", 403, headers=_HEADERS)
            self.sessions.close(session.sid)
        resp = RedirectResponse(f"{self._root(request)}/login", 303)
        resp.delete_cookie(COOKIE, path=f"{self._root(request)}/")
        return resp

    # ------------------------------------------------------------ pages
    async def overview(self, request: Request) -> Response:
        """Nodes online/offline, swarms by state, recent failures."""
        src = self.source
        nodes, swarms, failures = await run_in_threadpool(
            lambda: self.read(("overview",), lambda: (src.nodes(), src.swarms(), src.failures(20)))
        )
        by_state: dict[str, list[Any]] = {}
        for s in swarms:
            by_state.setdefault(s.status, []).append(s)
        return self.page(
            request,
            "overview.html",
            title="Overview",
            nodes=nodes,
            online=sum(n.online is True for n in nodes),
            offline=sum(n.online is False for n in nodes),
            virtual=sum(n.online is None for n in nodes),
            swarms=swarms,
            by_state=by_state,
            failures=failures,
        )

    async def swarm(self, request: Request) -> Response:
        """One swarm: graph, timeline, instances, failures, logs, charts, stop."""
        swarm_id = request.path_params["swarm_id"]
        q = request.query_params
        it_text = q.get("iteration", "")
        iteration = int(it_text) if it_text.lstrip("-").isdigit() else None
        node, task, level = q.get("node") or None, q.get("task") or None, q.get("level") or None
        text = q.get("text", "")
        src = self.source

        def read() -> tuple[Any, list[Any], list[Any]]:
            detail = self.read(
                ("swarm", swarm_id, iteration), lambda: src.swarm(swarm_id, iteration)
            )
            limit = 20 * LOG_LINES if text else LOG_LINES
            logs = self.read(
                ("logs", swarm_id, node, task, level, limit),
                lambda: src.logs(swarm_id, node, task, level, limit),
            )
            return detail, logs, self.read(("metrics", swarm_id), lambda: src.metrics(swarm_id))

        detail, logs, metrics = await run_in_threadpool(read)
        if detail is None:
            return self.page(
                request, "missing.html", 404, title="Not found", what=f"swarm {swarm_id}"
            )
        if text:
            logs = [r for r in logs if text.lower() in r.message.lower()][-LOG_LINES:]
        names = sorted({m.name for m in metrics})
        figures = [c for n in names for c in charts.per_node(n, metrics)]
        plan = detail.plan
        svg = Markup("")
        if plan is not None:
            counts = graph.task_counts(plan, [(r.alias, r.state) for r in detail.instances])
            svg = graph.svg(plan, counts)
        aliases = [t.alias for t in plan.tasks] if plan is not None else []
        return self.page(
            request,
            "swarm.html",
            title=f"Swarm {detail.info.name}",
            d=detail,
            s=detail.info,
            svg=svg,
            modules={
                t.alias: graph.module_label(plan, t.alias) for t in (plan.tasks if plan else ())
            },
            aliases=aliases,
            node_ids=sorted({r.node_id for r in detail.instances} | {r.node_id for r in logs}),
            levels=LEVELS,
            flt={"node": node or "", "task": task or "", "level": level or "", "text": text},
            logs=logs,
            charts=figures,
            chart_data=[c.to_dict() for c in figures],
            can_stop=self.source.can_stop and detail.info.status == "running",
        )

    async def stop(self, request: Request) -> Response:
        """Stop a swarm: a post with the session's CSRF token."""
        swarm_id = request.path_params["swarm_id"]
        form = await _form(request)
        if self.sessions is not None:
            session = self._session(request)
            if session is None or not Sessions.csrf_ok(session, form.get("csrf")):
                return Response(
                    "bad CSRF token: reload the page and try again", 403, headers=_HEADERS
                )
        if not self.source.can_stop:
            return Response("this dashboard cannot stop swarms", 405, headers=_HEADERS)
        await run_in_threadpool(self.source.stop, swarm_id)
        return RedirectResponse(f"{self._root(request)}/swarms/{quote(swarm_id, safe='')}", 303)

    async def node(self, request: Request) -> Response:
        """One node: its facts and its running and recent instances."""
        node_id = request.path_params["node_id"]
        src = self.source
        nodes, instances = await run_in_threadpool(
            lambda: (src.nodes(), src.node_instances(node_id))
        )
        found = next((n for n in nodes if n.node_id == node_id), None)
        if found is None:
            return self.page(
                request, "missing.html", 404, title="Not found", what=f"node {node_id}"
            )
        beats = list(found.beats)
        figures = [charts.heartbeats(beats)] if len(beats) > 1 else []
        return self.page(
            request,
            "node.html",
            title=f"Node {node_id}",
            n=found,
            instances=instances,
            beats=beats[::-1][: HEARTBEATS_LISTED + 1],  # one more: the last row's gap
            listed=HEARTBEATS_LISTED,
            beats_total=len(beats),
            charts=figures,
            chart_data=[c.to_dict() for c in figures],
        )

    async def story(self, request: Request) -> Response:
        """What happened to one instance."""
        instance_id = request.path_params["instance_id"]
        lines = await run_in_threadpool(self.source.story, instance_id)
        if lines is None:
            return self.page(
                request, "missing.html", 404, title="Not found", what=f"instance {instance_id}"
            )
        return self.page(
            request, "story.html", title=f"Instance {instance_id}", iid=instance_id, lines=lines
        )

    async def compare(self, request: Request) -> Response:
        """One metric across several swarms on one chart."""
        src = self.source
        chosen = request.query_params.getlist("swarm")
        name = request.query_params.get("metric", "")

        def read() -> tuple[list[Any], list[tuple[str, list[Any]]]]:
            swarms = src.swarms()
            runs = [
                (f"{s.name} ({s.swarm_id})", src.metrics(s.swarm_id))
                for s in swarms
                if s.swarm_id in chosen
            ]
            return swarms, runs

        swarms, runs = await run_in_threadpool(read)
        names = sorted({m.name for _, rows in runs for m in rows})
        chart = charts.across(name, runs) if name else None
        return self.page(
            request,
            "compare.html",
            title="Compare runs",
            swarms=swarms,
            chosen=chosen,
            metric=name,
            names=names,
            chart=chart,
            chart_data=[chart.to_dict()] if chart else [],
        )

    async def events(self, request: Request) -> Response:
        """Server-sent events: a message whenever the source changes."""
        src = self.source

        async def stream() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            end = loop.time() + SSE_MAX_S
            seen = src.generation()
            yield "retry: 1000\n\n"
            while loop.time() < end and not src.closing:
                now = await src.changed(seen, min(SSE_KEEPALIVE_S, end - loop.time()))
                if src.closing or await request.is_disconnected():
                    return
                if now != seen:
                    # Announce on the shared tick grid: every open page refetches at
                    # the same moment and one render serves them all (Dashboard.shared).
                    await asyncio.sleep(_next_tick(time.monotonic()) - time.monotonic())
                    seen = src.generation()
                    yield f"data: {seen}\n\n"
                else:
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def dashboard_app(source: Source, sessions: Sessions | None) -> Starlette:
    """The dashboard as an ASGI app, to mount (the coordinator: at ``/ui``) or serve."""
    d = Dashboard(source, sessions)
    g = d.guarded
    routes = [
        Route("/", g(d.overview)),
        Route("/swarms/{swarm_id}", g(d.swarm)),
        Route("/swarms/{swarm_id}/stop", g(d.stop), methods=["POST"]),
        Route("/nodes/{node_id}", g(d.node)),
        Route("/instances/{instance_id:path}", g(d.story)),
        Route("/compare", g(d.compare)),
        Route("/events", g(d.events)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if sessions is not None:
        routes += [
            Route("/login", d.login_form),
            Route("/login", d.login, methods=["POST"]),
            Route("/logout", d.logout, methods=["POST"]),
        ]
    return Starlette(routes=routes)
