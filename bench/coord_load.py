"""Coordinator load: many light node clients heartbeating and long-polling a real
coordinator.

One real coordinator process (``python -m shoal._coord``, a fresh SQLite store in a
temporary folder) on 127.0.0.1, and N light node clients: asyncio in a few client
processes, not one process per node, each node with its own keep-alive connections (a
small HTTP/1.1 client: httpx cost more CPU per request than the coordinator, see
``LightHttp``). Each client speaks the node API as ``shoal._node.client`` and
``shoal._node.agent`` do: it enrols with the join token, sends a first heartbeat with a
fresh session, then heartbeats every ``heartbeat_interval_s`` (the agent's default,
5 s) and keeps one long-poll for instructions open (``wait=25`` as the agent,
``after=<highest seq received>``, client timeout ``wait + 30``), re-polling as soon as
it returns. Clients start spread evenly over ``--ramp`` seconds. A prober in the driver
process sends ``GET /v1/health`` and a heartbeat of its own every 0.25 s from a client
that is never busy: the server's latency whatever load the client processes are under.

In the middle of the run (unless ``--no-swarm``) a small swarm is deployed through the
user API: a ``worker`` task on every node (``method="all"``) feeding an ``aggregator``
(``any``, one node), for ``--iterations`` iterations. The clients answer its run
instructions as an agent does: fetch the module bundle once per digest, report
``started``, make world calls (worker: ``globals.get``, ``results.add``, a ``batch`` of
a log and a metric; aggregator: ``results.list``, which must return one result per
node, and ``globals.set``), wait a random task time, and report ``done``.

Measured: the latency of every request by endpoint (a long-poll blocks by design, so for
polls that return empty the figure is how late past ``wait`` they returned), every error
(a non-2xx answer, a connection error or a timeout), how long a run instruction takes to
reach every node once its iteration starts, the coordinator's RSS and PSS over time
(``/proc/PID/smaps_rollup``, every 0.5 s), its CPU seconds, the client side's CPU
seconds and event-loop lag, and whether any node was lost (the coordinator logs a
warning for each). The exit status is non-zero if anything went wrong.

    python bench/coord_load.py [--nodes 500] [--duration 120] [--clients 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import httpx
import msgpack
from _proc import cpu_seconds, memory

from shoal._codec import encode
from shoal._coord.events import decode_event

HEARTBEAT_S = 5.0  # shoal._node.config.NodeConfig.heartbeat_interval_s default
POLL_WAIT_S = 25.0  # shoal._node.agent.POLL_WAIT_S
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)  # shoal._node.client.CoordinatorClient
HTTP_TIMEOUT_S = 30.0  # its read timeout
KEEPALIVE_S = 5.0  # httpx's keep-alive expiry, which the agent's client keeps
ENROL = "/v1/nodes/enrol"
HEARTBEAT = "/v1/nodes/heartbeat"
MSGPACK = "application/msgpack"
SAMPLE_S = 0.5
ENDPOINTS = (
    "enrol",
    "heartbeat",
    "instructions",
    "bundle",
    "started",
    "world",
    "done",
    "user: submit",
    "user: status",
    "user: nodes",
    "probe: health",
    "probe: heartbeat",
)
PROBE_S = 0.25


# ------------------------------------------------------------------------- helpers
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values`` (NaN if empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full (this
    network namespace: every listener on the machine, so other jobs' too)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        row = dict(zip(names.split(), values.split(), strict=False))
        if "ListenOverflows" in row:
            return int(row["ListenOverflows"])
    return 0


# ------------------------------------------------------------------ client process
@dataclass
class Recorder:
    """What one client process saw."""

    # endpoint -> [(monotonic time of the answer, seconds)]
    latency: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    polls_with_items: int = 0
    polls_empty_early: int = 0
    instructions: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by kind
    runs: list[tuple[str, float]] = field(default_factory=list)  # (instance id, received)
    dones: list[tuple[str, float]] = field(default_factory=list)  # (instance id, sent)
    checks: list[str] = field(default_factory=list)  # failed correctness checks
    loop_lag: list[float] = field(default_factory=list)

    def error(self, kind: str, what: str) -> None:
        # Every error counts; the first 1000 of each endpoint keep their message.
        self.errors[kind].append(what if len(self.errors[kind]) < 1000 else "")


class Answer(NamedTuple):
    """An HTTP answer: status and body."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LightHttp:
    """A small HTTP/1.1 client over asyncio streams, for one node.

    httpx cost about 3.6 ms of CPU per request here, more than the coordinator spent
    answering it, so with 2 cores the clients, not the coordinator, set the latencies.
    This client speaks the same requests at a fraction of the cost, and keeps the
    agent's connection behaviour: its own keep-alive connections, an idle one closed
    after 5 s (httpx's default, which the agent uses), one connection per request in
    flight.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes = b"",
        timeout: float = HTTP_TIMEOUT_S,
    ) -> Answer:
        return await asyncio.wait_for(self._request(method, target, headers, body), timeout)

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < KEEPALIVE_S and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    async def _request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Answer:
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in (0, 1):
            reader, writer, reused = await self._connection()
            try:
                writer.write(data)
                status_line = await reader.readline()
                if not status_line and reused and attempt == 0:
                    writer.close()  # the server closed a kept-alive connection: once more
                    continue
                answer, keep = await self._answer(reader, status_line)
            except BaseException:
                writer.close()
                raise
            if keep:
                self.idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return answer
        raise ConnectionError("unreachable")

    @staticmethod
    async def _answer(reader: asyncio.StreamReader, status_line: bytes) -> tuple[Answer, bool]:
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError(f"bad status line {status_line[:100]!r}")
        status = int(parts[1])
        length, chunked, keep = 0, False, True
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                keep = value != b"close"
        if not chunked:
            return Answer(status, await reader.readexactly(length)), keep
        pieces = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readline()
        return Answer(status, b"".join(pieces)), keep

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class LightNode:
    """One node: enrol, heartbeats, a long-poll, and answers to run instructions."""

    def __init__(self, node_id: str, args: argparse.Namespace, join: str, rec: Recorder) -> None:
        self.node_id = node_id
        self.args = args
        self.join = join
        self.rec = rec
        self.session = uuid.uuid4().hex
        self.credential = ""
        self.running: set[str] = set()
        self.finished: set[str] = set()
        self.bundles: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        url = urlsplit(args.url)
        self.http = LightHttp(url.hostname or "127.0.0.1", url.port or 80)
        self.offer = {"datasets": [], "gpu": False, "images": ["python"]}

    async def request(
        self,
        kind: str,
        method: str,
        target: str,
        *,
        json_body: Any = None,
        body: bytes = b"",
        content_type: str = "",
        timeout: float = HTTP_TIMEOUT_S,
    ) -> Answer | None:
        """One timed request; None (and an error recorded) unless it answered 2xx."""
        headers = {}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        if json_body is not None:
            body, content_type = json.dumps(json_body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        t0 = time.perf_counter()
        try:
            resp = await self.http.request(method, target, headers, body, timeout)
        except (OSError, EOFError, ValueError, asyncio.TimeoutError) as e:
            self.rec.error(kind, f"{type(e).__name__}: {e}")
            return None
        dt = time.perf_counter() - t0
        if resp.status >= 300:
            self.rec.error(kind, f"{resp.status}: {resp.body[:300]!r}")
            return None
        self.rec.latency[kind].append((time.monotonic(), dt))
        return resp

    async def serve(self, start: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        body = {"join_token": self.join, "node_id": self.node_id, **self.offer}
        while (resp := await self.request("enrol", "POST", ENROL, json_body=body)) is None:
            await asyncio.sleep(1.0)  # the agent retries with a backoff
        self.credential = resp.json()["credential"]
        # The first heartbeat carries the session before any instruction is taken.
        while await self.beat() is None:
            await asyncio.sleep(1.0)
        await asyncio.gather(self.heartbeats(), self.poll())

    async def beat(self) -> Answer | None:
        body = {**self.offer, "session": self.session, "running": sorted(self.running)}
        return await self.request("heartbeat", "POST", HEARTBEAT, json_body=body)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.args.heartbeat)
            await self.beat()  # a failed one is retried by the next beat

    async def poll(self) -> None:
        after = 0
        wait = self.args.poll_wait
        while True:
            t0 = time.perf_counter()
            target = f"/v1/nodes/instructions?wait={wait:g}&after={after}"
            try:
                resp = await self.http.request(
                    "GET", target, {"Authorization": f"Bearer {self.credential}"}, b"", wait + 30
                )
            except (OSError, EOFError, ValueError, asyncio.TimeoutError) as e:
                self.rec.error("instructions", f"{type(e).__name__}: {e}")
                await asyncio.sleep(1.0)
                continue
            dt = time.perf_counter() - t0
            if resp.status != 200:
                self.rec.error("instructions", f"{resp.status}: {resp.body[:300]!r}")
                await asyncio.sleep(1.0)
                continue
            items = resp.json()
            if items:
                self.rec.polls_with_items += 1
            elif dt < wait * 0.9:
                self.rec.polls_empty_early += 1
            else:
                self.rec.latency["instructions"].append((time.monotonic(), max(0.0, dt - wait)))
            now = time.monotonic()
            for item in items:
                after = max(after, int(item.get("seq", 0)))
                self.rec.instructions[str(item.get("kind"))] += 1
                iid = str(item.get("instance_id", ""))
                if item.get("kind") == "run" and iid not in self.running | self.finished:
                    self.running.add(iid)
                    self.rec.runs.append((iid, now))
                    task = asyncio.create_task(self.run(item))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    async def report(self, kind: str, method: str, target: str, **kw: Any) -> Answer:
        """A report the agent retries until it is acknowledged."""
        while True:
            resp = await self.request(kind, method, target, **kw)
            if resp is not None:
                return resp
            await asyncio.sleep(1.0)

    async def world(self, iid: str, op: str, args: dict[str, Any]) -> Any:
        data = msgpack.packb({"instance_id": iid, "op": op, "args": args}, use_bin_type=True)
        resp = await self.report("world", "POST", "/v1/world", body=data, content_type=MSGPACK)
        reply = msgpack.unpackb(resp.body, raw=False)
        if "ok" not in reply:
            self.rec.checks.append(f"{iid} {op}: {reply}")
        return reply.get("ok")

    async def run(self, item: dict[str, Any]) -> None:
        iid = item["instance_id"]
        digest = item["module"]
        if digest not in self.bundles:  # the agent's cache: one download per digest
            await self.report("bundle", "GET", f"/v1/bundles/{digest}")
            self.bundles.add(digest)
        await self.report("started", "POST", f"/v1/instances/{quote(iid)}/started")
        if item["alias"] == "aggregator":
            rows = await self.world(iid, "results.list", {"tag": "x"})
            if not isinstance(rows, list) or len(rows) != self.args.nodes:
                got = len(rows) if isinstance(rows, list) else rows
                self.rec.checks.append(f"{iid}: {got} results, expected {self.args.nodes}")
            await self.world(iid, "globals.set", {"key": "w", "value": {"inline": encode(1.0)}})
        else:
            await self.world(iid, "globals.get", {"key": "w"})
            value = {"inline": encode(float(item["iteration"]))}
            await self.world(iid, "results.add", {"tag": "x", "value": value})
            calls = [
                {"op": "log", "args": {"level": "info", "message": f"{iid} ran"}},
                {"op": "metric", "args": {"name": "loss", "value": 0.5, "step": 0}},
            ]
            await self.world(iid, "batch", {"calls": calls})
        await asyncio.sleep(random.uniform(0.0, self.args.task_s))
        body = {"ok": True, "error": "", "traceback": "", "kind": "error"}
        sent = time.monotonic()
        await self.report("done", "POST", f"/v1/instances/{quote(iid)}/done", json_body=body)
        self.rec.dones.append((iid, sent))
        self.running.discard(iid)
        self.finished.add(iid)


async def watch_loop(rec: Recorder, end: float) -> None:
    """How late this process's event loop wakes up (its own saturation)."""
    while time.monotonic() < end:
        t0 = time.monotonic()
        await asyncio.sleep(0.1)
        rec.loop_lag.append(time.monotonic() - t0 - 0.1)


async def client_main(args: argparse.Namespace) -> Recorder:
    rec = Recorder()
    join = Path(args.join_file).read_text().strip()
    mine = [i for i in range(args.nodes) if i % args.clients == args.client]
    nodes = [LightNode(f"load-{i:05d}", args, join, rec) for i in mine]
    end = args.t0 + args.duration
    starts = [args.t0 + args.ramp * i / args.nodes for i in mine]
    tasks = [asyncio.create_task(n.serve(s)) for n, s in zip(nodes, starts, strict=True)]
    watcher = asyncio.create_task(watch_loop(rec, end))
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    for t in tasks:
        t.cancel()
    for n in nodes:
        for t in list(n.tasks):
            t.cancel()
    await asyncio.gather(*tasks, watcher, return_exceptions=True)
    for n in nodes:
        n.http.close()
    return rec


def run_client(args: argparse.Namespace) -> int:
    """A client process: its nodes until the end, then what it saw as JSON."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    if hasattr(asyncio, "Runner"):  # Python 3.11+
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            rec = runner.run(client_main(args))
    else:
        rec = asyncio.run(client_main(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "latency": rec.latency,
        "errors": rec.errors,
        "polls_with_items": rec.polls_with_items,
        "polls_empty_early": rec.polls_empty_early,
        "instructions": rec.instructions,
        "runs": rec.runs,
        "dones": rec.dones,
        "checks": rec.checks,
        "loop_lag": rec.loop_lag,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    Path(args.out).write_text(json.dumps(out))
    return 0


# -------------------------------------------------------------------- the driver
SWARM_SOURCE = """
from shoal import Module, Swarm, Task


class LoadSwarm(Swarm):
    def __init__(self, folder, iterations, timeout):
        super().__init__()
        self.name = "coord_load"
        self.max_iterations = iterations
        self.set_global("w", 0.0)
        self.worker = Task(Module(folder / "worker.py"), method="all", timeout=timeout)
        self.aggregator = Task(
            Module(folder / "aggregator.py"), method="any", maximum=1, timeout=timeout
        )

    def execute(self):
        return self.aggregator(self.worker())
"""


def build_swarm(folder: Path, iterations: int, timeout: float = 60.0) -> dict[str, Any]:
    """The submission body of the load swarm (its task code never runs here)."""
    from shoal._define.compile import compile_swarm

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("worker", "aggregator"):
        (folder / f"{name}.py").write_text(f"def main():\n    pass  # {name}\n")
    namespace: dict[str, Any] = {}
    exec(compile(SWARM_SOURCE, str(folder / "swarm.py"), "exec"), namespace)
    compiled = compile_swarm(namespace["LoadSwarm"](folder, iterations, timeout))
    return {
        "plan": compiled.plan.to_json(),
        "bundles": {d: b.data for d, b in compiled.bundles.items()},
        "seed": 0,
    }


@dataclass
class Sampler:
    """The coordinator's memory and CPU seconds, sampled in a thread."""

    pid: int
    rss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, CPU s)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        rss, pss = memory(self.pid)
        if rss:
            self.rss.append(rss)
            self.pss.append(pss)
            self.cpu_s = cpu_seconds(self.pid)
            self.cpu.append((time.monotonic(), self.cpu_s))

    def cpu_between(self, t0: float, t1: float) -> float:
        """CPU seconds the coordinator spent from ``t0`` to ``t1`` (nearest samples)."""
        inside = [c for t, c in self.cpu if t0 <= t <= t1]
        return inside[-1] - inside[0] if len(inside) > 1 else math.nan

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


@contextmanager
def coordinator(state: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "shoal._coord", "--state", str(state), "--port", str(port)]
    argv += ["--log-level", "warning"]
    profile = os.environ.get("SHOAL_BENCH_PROFILE")  # cProfile the coordinator into this file
    if profile:
        argv[1:1] = ["-m", "cProfile", "-o", profile]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with suppress(httpx.HTTPError):
                r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)
                if r.status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the coordinator did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@dataclass
class UserSide:
    """The driver's own requests (user API), timed like the clients'."""

    http: httpx.Client
    latency: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def call(self, kind: str, method: str, path: str, **kw: Any) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            self.errors[kind].append(f"{type(e).__name__}: {e}")
            return None
        if resp.status_code >= 300:
            self.errors[kind].append(f"{resp.status_code}: {resp.text[:300]}")
            return None
        self.latency[kind].append((time.monotonic(), time.perf_counter() - t0))
        return resp


def probe(timed: UserSide, join: str, start: float, until: float) -> None:
    """Server responsiveness seen from an idle client (the driver), whatever load the
    client processes are under: ``GET /v1/health`` (no thread hop, no lock) and a
    heartbeat of a node of its own, every PROBE_S seconds. The probe node offers no
    image, so no task is ever placed on it."""
    time.sleep(max(0.0, start - time.monotonic()))
    offer = {"datasets": [], "gpu": False, "images": []}
    body = {"join_token": join, "node_id": "probe", **offer}
    resp = timed.call("enrol", "POST", "/v1/nodes/enrol", json=body)
    if resp is None:
        return
    auth = {"Authorization": f"Bearer {resp.json()['credential']}"}
    beat = {**offer, "session": uuid.uuid4().hex, "running": []}
    while time.monotonic() < until:
        timed.call("probe: health", "GET", "/v1/health")
        timed.call("probe: heartbeat", "POST", "/v1/nodes/heartbeat", json=beat, headers=auth)
        time.sleep(PROBE_S)


def dashboard(url: str, token: str, shown: dict[str, str], until: float, pages: list[int]) -> None:
    """One browser with the dashboard open, as ``shoal/_ui/static/dash.js`` behaves: it
    signs in, keeps the live event stream open, and on each announced change re-fetches
    the page it shows (the overview, then the deployed swarm's page), one at a time
    (changes announced during a fetch make one more fetch). ``pages[0]`` counts them."""
    changed = threading.Event()

    def listen(http: httpx.Client) -> None:
        while time.monotonic() < until:
            with suppress(httpx.HTTPError), http.stream("GET", "/ui/events") as events:
                for line in events.iter_lines():
                    if line.startswith("data:"):
                        changed.set()
                    if time.monotonic() >= until:
                        return

    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as http:
        http.post("/ui/login", data={"token": token})
        threading.Thread(target=listen, args=(http,), daemon=True).start()
        while time.monotonic() < until:
            if not changed.wait(0.5):
                continue
            changed.clear()
            path = f"/ui/swarms/{shown['swarm']}" if "swarm" in shown else "/ui/"
            with suppress(httpx.HTTPError):
                http.get(path, headers={"X-Shoal-Live": "1"})  # as dash.js
                pages[0] += 1


def deploy(
    user: UserSide, body: dict[str, Any], until: float, shown: dict[str, str] | None = None
) -> dict[str, Any]:
    """Submit the swarm and follow it until it ends (or ``until``); its id goes into
    ``shown["swarm"]`` (what open dashboards look at)."""
    t0 = time.monotonic()
    content = msgpack.packb(body, use_bin_type=True)
    headers = {"Content-Type": MSGPACK}
    resp = user.call("user: submit", "POST", "/v1/swarms", content=content, headers=headers)
    if resp is None:
        return {"status": "not submitted", "submitted": t0}
    swarm_id = resp.json()["swarm_id"]
    if shown is not None:
        shown["swarm"] = swarm_id
    status: dict[str, Any] = {"status": "running"}
    while time.monotonic() < until:
        time.sleep(0.5)
        got = user.call("user: status", "GET", f"/v1/swarms/{swarm_id}")
        if got is not None:
            status = got.json()
            if status["status"] != "running":
                break
    return {**status, "submitted": t0, "wall_s": time.monotonic() - t0}


def fanout(results: list[dict[str, Any]], swarm: dict[str, Any]) -> list[float]:
    """Per iteration: seconds from its start to the last node receiving its run.

    Iteration 0 starts when the swarm is submitted, iteration k when the aggregator of
    iteration k-1 reported done (monotonic clocks are shared by processes)."""
    runs: dict[int, list[float]] = defaultdict(list)
    agg_done: dict[int, float] = {}
    for r in results:
        for iid, t in r["runs"]:
            parts = iid.split("/")
            if parts[2] == "worker":
                runs[int(parts[1])].append(t)
        for iid, t in r["dones"]:
            parts = iid.split("/")
            if parts[2] == "aggregator":
                agg_done[int(parts[1])] = t
    out = []
    for it in sorted(runs):
        begin = swarm["submitted"] if it == 0 else agg_done.get(it - 1)
        if begin is not None:
            out.append(max(runs[it]) - begin)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=500)
    p.add_argument("--duration", type=float, default=120.0, help="seconds, ramp included")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds over which nodes start")
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_S, help="seconds")
    p.add_argument("--poll-wait", type=float, default=POLL_WAIT_S, help="long-poll seconds")
    p.add_argument("--no-swarm", action="store_true", help="heartbeats and polls only")
    p.add_argument("--iterations", type=int, default=3, help="iterations of the swarm")
    p.add_argument("--task-s", type=float, default=1.0, help="longest task time, seconds")
    p.add_argument(
        "--task-timeout", type=float, default=60.0, help="the swarm's task timeout, seconds"
    )
    p.add_argument(
        "--dashboards", type=int, default=0, help="browsers with the dashboard open (live)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--keep", type=Path, default=None, help="keep raw samples and logs here")
    # Internal: run as one client process.
    p.add_argument("--client", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--join-file", default="", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client is not None:
        return run_client(args)
    return drive(args)


def drive(args: argparse.Namespace) -> int:
    load_start = loadavg()
    overflows_start = listen_overflows()
    with tempfile.TemporaryDirectory(prefix="shoal-coord-load-") as tmp:
        root = Path(tmp)
        state = root / "coord"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = root / "coord.log"
        body = (
            None
            if args.no_swarm
            else build_swarm(root / "swarm", args.iterations, args.task_timeout)
        )
        with coordinator(state, port, log) as coord:
            sampler = Sampler(coord.pid)
            sampler.start()
            t0 = time.monotonic() + 2.0  # the client processes import meanwhile
            end = t0 + args.duration
            procs = []
            for c in range(args.clients):
                argv = [sys.executable, __file__, "--client", str(c), "--url", url]
                argv += ["--join-file", str(state / "join-token"), "--t0", repr(t0)]
                argv += ["--out", str(root / f"client-{c}.json")]
                argv += ["--nodes", str(args.nodes), "--clients", str(args.clients)]
                argv += ["--duration", repr(args.duration), "--ramp", repr(args.ramp)]
                argv += ["--heartbeat", repr(args.heartbeat), "--task-s", repr(args.task_s)]
                argv += ["--poll-wait", repr(args.poll_wait)]
                procs.append(subprocess.Popen(argv, start_new_session=True))
            user_token = (state / "user-token").read_text().strip()
            auth = {"Authorization": f"Bearer {user_token}"}
            swarm: dict[str, Any] = {}
            join = (state / "join-token").read_text().strip()
            with (
                httpx.Client(base_url=url, headers=auth, timeout=HTTP_TIMEOUT) as http,
                httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as probe_http,
            ):
                user = UserSide(http)
                probed = UserSide(probe_http)
                prober = threading.Thread(
                    target=probe, args=(probed, join, t0, end - 1.0), daemon=True
                )
                prober.start()
                shown: dict[str, str] = {}
                pages = [0]
                for _ in range(args.dashboards):
                    threading.Thread(
                        target=dashboard,
                        args=(url, user_token, shown, end - 1.0, pages),
                        daemon=True,
                    ).start()
                if body is not None:
                    at = t0 + args.ramp + (args.duration - args.ramp) / 4
                    time.sleep(max(0.0, at - time.monotonic()))
                    swarm = deploy(user, body, end - 1.0, shown)
                    swarm["dashboard_pages"] = pages[0]
                time.sleep(max(0.0, end - 1.0 - time.monotonic()))
                got = user.call("user: nodes", "GET", "/v1/nodes")
                nodes = got.json() if got is not None else []
                prober.join()
                for proc in procs:
                    try:
                        proc.wait(timeout=max(60.0, args.duration))
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            sampler.stop()
        rows = store_rows(state / "shoal.db")
        load_end = loadavg()
        overflows = listen_overflows() - overflows_start
        coord_log = log.read_text(errors="replace")
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in [log, *root.glob("client-*.json")]:
                shutil.copy(f, args.keep / f.name)
            raw = {"swarm": swarm, "probe": probed.latency, "user": user.latency}
            (args.keep / "driver.json").write_text(json.dumps(raw))
        results = []
        for c, proc in enumerate(procs):
            out = root / f"client-{c}.json"
            if proc.returncode != 0 or not out.exists():
                print(f"client process {c} failed (exit {proc.returncode})", file=sys.stderr)
                return 2
            results.append(json.loads(out.read_text()))
    return report(
        args,
        results,
        [user, probed],
        sampler,
        swarm,
        nodes,
        coord_log,
        (load_start, load_end),
        overflows,
        rows,
    )


def store_rows(db: Path) -> dict[str, int]:
    """Rows per table of the coordinator's SQLite store once it has stopped: what the
    run wrote (heartbeats that change nothing write nothing; see docs/scale.md)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
        for (payload,) in con.execute("SELECT payload FROM shoal_events"):
            kind = f"event {type(decode_event(payload)).__name__}"
            rows[kind] = rows.get(kind, 0) + 1
        return rows


def phases(timed: dict[str, list[tuple[float, float]]], window: tuple[float, float]) -> None:
    """Heartbeat and long-poll latency while no swarm runs and while one does."""
    print()
    print("| endpoint | phase | requests | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for kind in ("heartbeat", "instructions", "probe: health", "probe: heartbeat"):
        pairs = timed.get(kind, [])
        for phase, inside in (("no swarm running", False), ("the swarm running", True)):
            ms = [dt * 1000 for t, dt in pairs if (window[0] <= t <= window[1]) == inside]
            print(
                f"| {kind} | {phase} | {len(ms)} | {pct(ms, 0.5):.1f} | {pct(ms, 0.99):.1f} | "
                f"{max(ms, default=math.nan):.1f} |"
            )


def report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    driver_side: list[UserSide],
    sampler: Sampler,
    swarm: dict[str, Any],
    nodes: list[dict[str, Any]],
    coord_log: str,
    load: tuple[str, str],
    overflows: int = 0,
    rows: dict[str, int] | None = None,
) -> int:
    timed: dict[str, list[tuple[float, float]]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    own = [{"latency": u.latency, "errors": u.errors} for u in driver_side]
    for r in [*results, *own]:
        for k, v in r["latency"].items():
            timed[k] += [(float(t), float(dt)) for t, dt in v]
        for k, v in r["errors"].items():
            errors[k] += v
    latency = {k: [dt for _, dt in v] for k, v in timed.items()}
    checks = [c for r in results for c in r["checks"]]
    lost = [line for line in coord_log.splitlines() if " lost: " in line]
    problems = [line for line in coord_log.splitlines() if "ERROR" in line or "Traceback" in line]
    connected = sum(1 for n in nodes if n["connected"] and n["node_id"] != "probe")
    client_cpu = sum(r["cpu_s"] for r in results)
    driver = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = driver.ru_utime + driver.ru_stime
    lag = [x for r in results for x in r["loop_lag"]]
    n_requests = sum(len(v) for v in latency.values()) + sum(len(v) for v in errors.values())
    n_errors = sum(len(v) for v in errors.values())
    early = sum(r["polls_empty_early"] for r in results)
    with_items = sum(r["polls_with_items"] for r in results)
    mib = 2**20

    print(
        f"coordinator load: {args.nodes} nodes, {args.duration:g} s (nodes start over "
        f"{args.ramp:g} s), {args.clients} client processes, heartbeat every "
        f"{args.heartbeat:g} s, long-poll wait {args.poll_wait:g} s; "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; "
        f"load average {load[0]} at the start, {load[1]} at the end"
    )
    print()
    print("| endpoint | requests | errors | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for kind in ENDPOINTS:
        lat, err = latency.get(kind, []), errors.get(kind, [])
        if not lat and not err:
            continue
        name = kind
        if kind == "instructions":
            name = "instructions (long-poll: ms past `wait`, empty answers)"
        ms = [x * 1000 for x in lat]
        print(
            f"| {name} | {len(lat) + len(err)} | {len(err)} | {pct(ms, 0.5):.1f} | "
            f"{pct(ms, 0.99):.1f} | {max(ms, default=math.nan):.1f} |"
        )
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| requests | {n_requests} |")
    print(f"| errors (non-2xx, connection errors, timeouts) | {n_errors} |")
    print(f"| long-polls answered with instructions / empty too early | {with_items} / {early} |")
    print(f"| nodes lost (coordinator log) | {len(lost)} |")
    print(f"| errors in the coordinator log | {len(problems)} |")
    print(f"| nodes connected at the end | {connected} / {args.nodes} |")
    print(f"| connections dropped by a full accept queue (kernel) | {overflows} |")
    fan: list[float] = []
    if swarm:
        fan = fanout(results, swarm)
        n_runs = sum(len(r["runs"]) for r in results)
        print(
            f"| swarm (worker on every node -> aggregator, {args.iterations} iterations) | "
            f"{swarm.get('status')} in {swarm.get('wall_s', math.nan):.1f} s, "
            f"{n_runs} instances run |"
        )
        print(
            "| iteration start -> run received by every node, s | "
            + ", ".join(f"{x:.2f}" for x in fan)
            + " |"
        )
        print(f"| failed checks (aggregator saw every result, world calls ok) | {len(checks)} |")
        window = (swarm["submitted"], swarm["submitted"] + swarm.get("wall_s", math.inf))
        rounds = int(swarm.get("iteration", args.iterations - 1)) + 1  # started ones
        per_round = sampler.cpu_between(*window) / max(rounds, 1)
        print(
            f"| coordinator CPU per iteration of the swarm, {args.dashboards} dashboards open "
            f"({swarm.get('dashboard_pages', 0)} live page refreshes) | {per_round:.2f} s |"
        )
        phases(timed, window)
        print()
        print("| figure | value |")
        print("|---|---|")
    print(
        f"| coordinator RSS peak / final | {max(sampler.rss, default=0) / mib:.0f} / "
        f"{(sampler.rss[-1] if sampler.rss else 0) / mib:.0f} MiB |"
    )
    print(
        f"| coordinator PSS peak / final | {max(sampler.pss, default=0) / mib:.0f} / "
        f"{(sampler.pss[-1] if sampler.pss else 0) / mib:.0f} MiB |"
    )
    wall = args.duration + 2.0
    print(
        f"| coordinator CPU | {sampler.cpu_s:.1f} s ({100 * sampler.cpu_s / wall:.0f}% of one "
        "core) |"
    )
    print(
        f"| client side CPU ({args.clients} processes + this driver) | "
        f"{client_cpu + driver_cpu:.1f} s ({100 * (client_cpu + driver_cpu) / wall:.0f}% of "
        "one core) |"
    )
    print(
        f"| client event-loop lag p50 / p99 / max | {pct(lag, 0.5) * 1000:.1f} / "
        f"{pct(lag, 0.99) * 1000:.1f} / {max(lag, default=math.nan) * 1000:.1f} ms |"
    )
    if rows:
        written = ", ".join(f"{k} {v}" for k, v in sorted(rows.items()) if v)
        print(f"| store rows at the end, by table | {written} |")
    for kind, errs in errors.items():
        for e in sorted(set(errs))[:5]:
            print(f"error ({kind}): {e}", file=sys.stderr)
    for line in lost[:10]:
        print(f"coordinator: {line}", file=sys.stderr)
    if problems:  # the first error in full
        lines = coord_log.splitlines()
        first = lines.index(problems[0])
        for line in lines[first : first + 60]:
            print(f"coordinator: {line}", file=sys.stderr)
    for c in checks[:10]:
        print(f"check failed: {c}", file=sys.stderr)
    ok_swarm = not swarm or swarm.get("status") == "succeeded"
    failed = (
        n_errors or lost or problems or checks or early or connected != args.nodes or not ok_swarm
    )
    if args.json is not None:
        figures = {
            "nodes": args.nodes,
            "duration_s": args.duration,
            "requests": n_requests,
            "errors": n_errors,
            "endpoints": {
                k: {
                    "requests": len(latency.get(k, [])) + len(errors.get(k, [])),
                    "errors": len(errors.get(k, [])),
                    "p50_s": pct(latency.get(k, []), 0.5),
                    "p99_s": pct(latency.get(k, []), 0.99),
                    "max_s": max(latency.get(k, []), default=math.nan),
                }
                for k in ENDPOINTS
                if k in latency or k in errors
            },
            "nodes_lost": len(lost),
            "listen_overflows": overflows,
            "connected": connected,
            "swarm_status": swarm.get("status"),
            "fanout_s": fan,
            "coord_rss_peak": max(sampler.rss, default=0),
            "coord_pss_peak": max(sampler.pss, default=0),
            "coord_pss_final": sampler.pss[-1] if sampler.pss else 0,
            "coord_cpu_s": sampler.cpu_s,
            "client_cpu_s": client_cpu + driver_cpu,
            "polls_with_items": with_items,
            "instructions_by_kind": {
                k: sum(r["instructions"].get(k, 0) for r in results)
                for k in sorted({k for r in results for k in r["instructions"]})
            },
            "store_rows": rows or {},
            "instances_run": sum(len(r["runs"]) for r in results),
            "swarm_wall_s": swarm.get("wall_s"),
            "ok": not failed,
        }
        args.json.write_text(json.dumps(figures, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
