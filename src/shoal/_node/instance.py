"""One instance on a node: fetch its bundle, start it, serve its socket, report it.

Each instance runs in its own agent thread. Its task process connects to a private Unix
socket and must present the instance's token first; a connection with a wrong token is
closed and the socket keeps waiting for the right one. The thread enforces the
wall-clock timeout, kills the process on cancel, and reports ``started`` and ``done``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import selectors
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal._api.schemas import MAX_DONE_CALLS, RunInstruction
from shoal._errors import ShoalError
from shoal._exec.base import (
    Executor,
    InstanceSpec,
    TaskHandle,
    container_network,
    failure_reason,
)
from shoal._exec.requirements import (
    Installed,
    OverlayBuilder,
    RequirementChecker,
    overlay_dists,
    unmet_pairs,
)
from shoal._node.cache import Caches
from shoal._node.client import (
    DISK_FULL_CODES,
    Abandoned,
    CoordinatorClient,
    Stopped,
    abandon_when,
)
from shoal._node.config import OCI_EXECUTORS, Limits, NodeConfig
from shoal._node.proxy import NET_INLINE_MAX, InstanceScope, WorldProxy
from shoal._node.warm import WarmKey, WarmPool, WarmProcess
from shoal._runtime import ops, protocol

log = logging.getLogger("shoal.node")
# (swarm, network) pairs whose "no effect here" warning was logged: once each.
_WARNED_NETWORKS: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()

STARTED_DELAY_S = 0.5  # an instance that ends sooner reports its start with its end
EXIT_SEEN_S = 1.0  # after its process exited, how long its socket may take to say so
HELLO_TIMEOUT_S = 10.0
HELLO_MAX_BYTES = 4096
MAX_PENDING_BYTES = 256 * 1024 * 1024  # an unfinished frame larger than this: kill
EXIT_GRACE_S = 10.0  # after "done", how long the process may take to exit
TIMEOUT_GRACE_S = 5.0  # past the task's timeout, when the agent kills it itself
# The handle's own wall-clock limit, past the agent's deadline: it stops the task even
# when this thread is stuck (the agent's kill, which comes first, names the timeout).
WALL_BACKSTOP_S = 5.0
BATCHED = ops.names(batched=True)  # one-way records sent to the coordinator in batches
# One-way calls held back to go with the instance's ``done`` (a worker's result and its
# end in one request), up to MAX_DONE_CALLS calls and HELD_MAX_BYTES of inline values
# (a ``done`` is then about as large as one world call with an inline value). They are
# sent on their own before any other call to the coordinator, past either bound, and
# when the task goes on for HELD_WAIT_S without ending: a long task's result is not
# kept back.
HELD = ops.names(deferrable=True)
HELD_MAX_BYTES = NET_INLINE_MAX
HELD_WAIT_S = 0.05


@dataclass(frozen=True)
class Ended:
    """How an instance ended on this node."""

    ok: bool
    error: str = ""
    traceback: str = ""
    kind: str = "error"  # error | crash | timeout


# The coordinator cancelled the instance: it decided the outcome, nothing is reported.
CANCELLED = Ended(False, "cancelled")


class Host(Protocol):
    """What an instance needs from its agent."""

    config: NodeConfig
    client: CoordinatorClient
    caches: Caches
    proxy: WorldProxy
    executor: Executor
    slots: threading.Semaphore
    warm: WarmPool | None
    socket_dir: Path
    requirements: RequirementChecker
    overlays: OverlayBuilder | None
    gpu_devices: tuple[Path, ...]

    def image_path(self, image: str) -> tuple[Path, str | None] | None:
        """The interpreter of an image and the PYTHONPATH it needs, or None."""
        ...

    def finished(self, instance_id: str) -> None:
        """The instance's thread is done with it."""
        ...


def requested_limits(
    item: RunInstruction, limits: Limits
) -> tuple[int | None, int | None, int | None, float | None]:
    """``memory_mb``, ``cpu_seconds``, ``max_processes``, ``cpus`` of an instance: the
    node's limits, lowered to the module's memory and CPU requests (a module asking for
    ``{"memory": "4Gi", "cpu": 2}`` gets at most 4 GiB and two cores; the placement
    already checked that the node has them)."""
    memory_mb, cpus = limits.memory_mb, limits.cpus
    if item.memory:
        asked = max(16, -(-item.memory // 2**20))  # MiB, rounded up; the config's floor
        memory_mb = asked if memory_mb is None else min(memory_mb, asked)
    if item.cpu:
        cpus = item.cpu if cpus is None else min(cpus, item.cpu)
    return memory_mb, limits.cpu_seconds, limits.max_processes, cpus


def _recv_hello(conn: socket.socket) -> dict[str, Any]:
    """The first frame, read with a small bound: whoever connected is not trusted yet
    and must not make the agent allocate a huge buffer."""
    reader = protocol.FrameReader()
    got = 0
    while True:
        data = conn.recv(4096)
        if not data:
            raise protocol.ChannelClosed("closed before saying hello")
        got += len(data)
        if got > HELLO_MAX_BYTES:
            raise ShoalError("first frame too large", code="node.hello")
        frames = reader.feed(data)
        if reader.broken is not None:
            raise reader.broken
        if frames:
            return frames[0]


_READY, _EXITED, _WOKEN = "ready", "exited", "woken"


class _Waiter:
    """Waits on a socket, a wake-up pipe and a process's exit at once (a pidfd where
    the process is a child with one; else its exit is seen when its socket closes)."""

    def __init__(self, sock: socket.socket, wake: socket.socket, handle: TaskHandle) -> None:
        self._sel = selectors.DefaultSelector()
        self._sel.register(sock, selectors.EVENT_READ, _READY)
        self._sel.register(wake, selectors.EVENT_READ, _WOKEN)
        self._wake = wake
        self._pidfd: int | None = None
        self._exited_at: float | None = None
        proc = getattr(handle, "proc", None)
        pid = getattr(proc, "pid", None)
        if isinstance(pid, int) and hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(pid)
                self._sel.register(self._pidfd, selectors.EVENT_READ, _EXITED)

    def __enter__(self) -> _Waiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sel.close()
        if self._pidfd is not None:
            os.close(self._pidfd)

    def wait(self, deadline: float) -> str | None:
        """What happened first: the socket is readable (``_READY``, also after the
        process exited: what it sent before is read first), the process exited and its
        socket stayed quiet (``_EXITED``), a wake-up, or None at the deadline."""
        timeout = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
        if self._exited_at is not None:
            left = self._exited_at + EXIT_SEEN_S - time.monotonic()
            if left <= 0:
                return _EXITED
            timeout = left if timeout is None else min(timeout, left)
        events = [key.data for key, _ in self._sel.select(timeout)]
        if _READY in events:
            return _READY
        if _WOKEN in events:
            with contextlib.suppress(OSError):
                self._wake.recv(64)
            return _WOKEN
        if _EXITED in events and self._pidfd is not None:
            self._sel.unregister(self._pidfd)
            self._exited_at = time.monotonic()
            return None
        if self._exited_at is not None and time.monotonic() >= self._exited_at + EXIT_SEEN_S:
            return _EXITED
        return None


class _StartedReport:
    """The ``started`` report of an instance, sent only if it runs for a while.

    An instance that ends within :data:`STARTED_DELAY_S` reports its start with its
    ``done`` (one request, not two, on the round path); a longer one reports it when
    that time has passed, so the coordinator shows it running. Either way the start is
    reported before the end.
    """

    def __init__(self, host: Host, instance_id: str) -> None:
        self._host = host
        self._instance_id = instance_id
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._state = "none"  # none | armed | sending | sent

    def arm(self, abandon: Callable[[], str | None]) -> None:
        """The task process is running the instance: report it after the delay."""

        def send() -> None:
            with self._lock:
                if self._state != "armed":
                    return
                self._state = "sending"
            try:
                with abandon_when(abandon), contextlib.suppress(Abandoned, Stopped):
                    self._host.client.started(self._instance_id)
            except Exception as e:  # the done report says it started instead
                log.warning("instance %s: reporting its start failed: %s", self._instance_id, e)
            finally:
                with self._lock:
                    self._state = "sent"

        with self._lock:
            self._state = "armed"
            self._timer = threading.Timer(STARTED_DELAY_S, send)
            self._timer.daemon = True
            self._timer.start()

    def settle(self) -> bool:
        """Whether ``done`` must carry the start (it was not reported); waits for a
        report being sent, so the start arrives first."""
        with self._lock:
            if self._state in ("none", "armed"):
                started = self._state == "armed"
                self._state = "sent"
                if self._timer is not None:
                    self._timer.cancel()
                return started
            timer = self._timer
        if timer is not None:
            timer.join()
        return False


class InstanceRun:
    """Runs one ``run`` instruction to its end (call :meth:`run` in a thread).

    Its task process is a fresh one, or a warm one that ran an earlier instance of the
    same module of the same swarm (:mod:`shoal._node.warm`). Every wait is on file
    descriptors: the task's socket, the process's exit (a pidfd) and a wake-up pipe
    that :meth:`cancel` writes to; the deadline is the wait's timeout. Nothing polls.
    """

    def __init__(self, host: Host, item: RunInstruction) -> None:
        self.host = host
        self.item = item
        self.instance_id = item.instance_id
        self._cancelled = threading.Event()
        # Written by cancel() to end a wait at once; made when the thread starts.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._handle: TaskHandle | None = None
        self._started = _StartedReport(host, item.instance_id)
        self._notify_error: str | None = None
        self._fatal: Ended | None = None  # ends the instance now (a full disk)
        self._held: list[dict[str, Any]] = []  # prepared one-way calls for ``done``
        self._held_bytes = 0
        self._held_since = 0.0  # when the first of them was held (monotonic)

    def cancel(self, reason: str) -> None:
        """Stop the instance; nothing is reported (the coordinator already decided)."""
        log.info("cancelling %s: %s", self.instance_id, reason)
        self._cancelled.set()
        if (wake := self._wake_w) is not None:
            with contextlib.suppress(OSError):
                wake.send(b"x")

    def run(self) -> None:
        """Thread body."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        try:
            with self.host.slots:
                if self._cancelled.is_set():
                    return
                ended = self._run()
            if ended is not None and ended is not CANCELLED and not self._cancelled.is_set():
                body = {**ended.__dict__, "started": self._started.settle()}
                if self._held:  # stored first, whether the instance succeeded or not
                    body["calls"] = self._held
                self.host.client.done(self.instance_id, body)
        except Stopped:
            pass
        except Exception as e:
            # Never leave the coordinator waiting: report the agent's own failure.
            log.exception("instance %s: the agent failed to run it", self.instance_id)
            ended = Ended(False, f"the node agent failed to run it: {e}", kind="crash")
            with contextlib.suppress(Exception):
                body = {**ended.__dict__, "started": self._started.settle()}
                self.host.client.done(self.instance_id, body)
        finally:
            self._started.settle()  # a cancelled instance's start is not reported later
            self._wake_r.close()
            self._wake_w.close()
            self._wake_w = None
            self.host.finished(self.instance_id)

    # ------------------------------------------------------------------ phases
    def _unmet_requirements(self, interpreter: Path) -> Ended | Path | None:
        """The refusal of an instance whose image lacks some of its requirements; or,
        where the node's owner allows installing them, the folder that holds them."""
        item = self.item
        if not item.requirements or self.host.executor.name in OCI_EXECUTORS:
            return None  # an OCI image is not probed here (its interpreter is inside)
        try:
            have = self.host.requirements.installed(interpreter)
        except Exception as e:  # the image's interpreter cannot be asked
            return Ended(False, f"checking the module's requirements failed: {e}", kind="crash")
        pairs = unmet_pairs(item.requirements, have)
        if not pairs:
            return None
        builder = self.host.overlays
        if builder is not None:
            try:
                folder = builder.overlay(interpreter, [text for text, _ in pairs], have)
            except Exception as e:
                return Ended(False, f"node {self.host.config.node_id}: {e}")
            merged = Installed({**have.dists, **overlay_dists(folder)}, have.env)
            pairs = unmet_pairs(item.requirements, merged)
            if not pairs:
                return folder
        unmet = [why for _, why in pairs]
        return Ended(
            False,
            f"node {self.host.config.node_id} refuses the task: its image {item.image!r} "
            f"lacks requirements {'; '.join(unmet)} (install them into that image's "
            "environment, or map the image to an environment that has them in [images] "
            "of node.toml)",
        )

    def _network(self) -> str | None:
        """The container network of the task's network, where the executor has them;
        elsewhere a network has no effect, which the agent says once per network."""
        item = self.item
        if item.network is None:
            return None
        if getattr(self.host.executor, "shares_networks", False):
            return container_network(item.swarm_id, item.network)
        with _WARNED_LOCK:
            first = (item.swarm_id, item.network) not in _WARNED_NETWORKS
            _WARNED_NETWORKS.add((item.swarm_id, item.network))
        if first:
            log.warning(
                "swarm %s: task %r names network %r, which has no effect under the %s "
                "executor (only podman/docker give a swarm's tasks a shared network); "
                "its tasks run without a network",
                item.swarm_id,
                item.alias,
                item.network,
                getattr(self.host.executor, "name", "this"),
            )
        return None

    def _warm_key(self) -> WarmKey | None:
        """The key of the warm processes this instance may run in; None: it gets a
        fresh process of its own (warm processes are off on this node, the module asks
        for a fresh process, or a limit counts the process's whole life). What a task
        adds to its process (GPU device files, a container network) is in the key too."""
        pool, item = self.host.warm, self.item
        if pool is None or item.fresh_process or self.host.config.limits.cpu_seconds is not None:
            return None
        datasets = tuple(sorted(item.datasets))
        return (item.swarm_id, item.module, item.image, datasets, item.gpu, item.network)

    def _run(self) -> Ended | None:
        item, cfg = self.item, self.host.config
        image = self.host.image_path(item.image)
        if image is None:
            return Ended(False, f"node {cfg.node_id} has no image {item.image!r}")
        refused = self._unmet_requirements(image[0])
        if isinstance(refused, Ended):
            return refused
        if refused is not None:  # the requirements it lacked, installed for it
            image = (image[0], os.pathsep.join(p for p in (str(refused), image[1]) if p))
        try:
            folder = self.host.caches.bundle(item.module)
        except Stopped:
            raise
        except Exception as e:
            return Ended(False, f"fetching the module bundle failed: {e}", kind="crash")
        if self._cancelled.is_set():
            return CANCELLED
        datasets = {n: cfg.datasets[n] for n in item.datasets if n in cfg.datasets}
        key = self._warm_key()
        pool = self.host.warm
        proc = pool.take(key) if pool is not None and key is not None else None
        token = None
        if proc is None:
            token = secrets.token_urlsafe(32)
            started = self._start(image, folder, datasets, key, token)
            if isinstance(started, Ended):
                return started
            proc = started
        self._handle = proc.handle
        scope = InstanceScope(self.instance_id, cfg.node_id, datasets, proc.outbox, proc.view)
        keep = False
        backstop = None
        try:
            deadline = self._deadline()
            if key is not None and (budget := self._budget()) is not None:
                # A warm process outlives its handle's own wall-clock limit: this
                # instance's backstop, should this thread be stuck past its deadline.
                backstop = threading.Timer(budget + WALL_BACKSTOP_S, proc.handle.kill)
                backstop.daemon = True
                backstop.start()
            # While the coordinator is unreachable, a call of this instance's thread
            # stops retrying at its cancel or deadline, so the task is still stopped then.
            with abandon_when(lambda: self._abandon_reason(deadline)):
                self._started.arm(lambda: self._abandon_reason(deadline))
                ended = self._serve(proc, token, scope, folder, deadline)
            ended = self._explained(ended)
            keep = (
                key is not None
                and ended is not None
                and ended.ok
                and not self._cancelled.is_set()
                and proc.handle.poll() is None
            )
            return ended
        finally:
            if backstop is not None:
                backstop.cancel()
            if keep and pool is not None:
                proc.runs += 1
                pool.give(proc)  # before "done" is sent: the next instance finds it
            else:
                proc.close()

    def _start(
        self,
        image: tuple[Path, str | None],
        folder: Path,
        datasets: dict[str, Path],
        key: WarmKey | None,
        token: str,
    ) -> WarmProcess | Ended:
        """Start a task process with its own folders and socket."""
        cfg = self.host.config
        name = self.instance_id if key is None else f"{self.instance_id}/{secrets.token_hex(8)}"
        tag = hashlib.sha256(name.encode()).hexdigest()[:20]
        workdir = cfg.state_dir / "work" / tag
        # The values it is given, linked from the cache (which it never sees whole).
        view = cfg.state_dir / "work" / f"{tag}.view"
        for old in (workdir, view):
            shutil.rmtree(old, ignore_errors=True)
        (workdir / "outbox").mkdir(parents=True)
        view.mkdir(mode=0o700)
        sock_path = self.host.socket_dir / f"{tag}.sock"
        budget = self._budget()
        spec = InstanceSpec(
            self.instance_id,
            image[0],
            image[1],
            workdir,
            folder,
            datasets,
            view,
            *requested_limits(self.item, cfg.limits),
            image=self.item.image,
            # A warm process gets a backstop per instance instead (see _run).
            wall_s=None if budget is None or key is not None else budget + WALL_BACKSTOP_S,
            # Only a task that asked for a GPU sees the GPU's device files.
            devices=self.host.gpu_devices if self.item.gpu else (),
            network=self._network(),
        )
        outbox = (workdir / "outbox").resolve()  # fixed before any task code runs
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock_path.unlink(missing_ok=True)
            listener.bind(str(sock_path))
            sock_path.chmod(0o600)
            listener.listen(4)
            pool = self.host.warm
            if key is not None and pool is not None:
                handle = pool.spawn(lambda: self.host.executor.start(spec, sock_path, token))
            else:
                handle = self.host.executor.start(spec, sock_path, token)
        except Exception as e:  # a sandbox that cannot start fails this instance only
            log.warning("instance %s: the executor could not start it: %s", spec.instance_id, e)
            listener.close()
            sock_path.unlink(missing_ok=True)
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(view, ignore_errors=True)
            return Ended(False, f"the executor could not start the task: {e}", kind="crash")
        if key is not None and pool is not None:
            pool.started += 1
        return WarmProcess(
            key or ("", "", "", (), 0, None), handle, listener, sock_path, workdir, view, outbox
        )

    def _explained(self, ended: Ended | None) -> Ended | None:
        """Name the limit that stopped a failed instance, when its executor can tell."""
        if ended is None or ended.ok or ended is CANCELLED or self._handle is None:
            return ended
        self._handle.wait(EXIT_GRACE_S)
        reason = failure_reason(self._handle)
        if reason is None:
            return ended
        return Ended(False, f"{reason}; {ended.error}", ended.traceback, ended.kind)

    def _budget(self) -> float | None:
        """The most seconds the task may run: the node's wall-clock limit or the task's
        timeout plus a grace period, whichever is less (None: no bound)."""
        limits = [self.host.config.limits.wall_timeout_s]
        timeout = self.item.timeout_s
        if timeout is not None:
            limits.append(float(timeout) + TIMEOUT_GRACE_S)
        known = [x for x in limits if x is not None]
        return min(known) if known else None

    def _deadline(self) -> float:
        budget = self._budget()
        return float("inf") if budget is None else time.monotonic() + budget

    def _abandon_reason(self, deadline: float) -> str | None:
        if self._cancelled.is_set():
            return "the instance was cancelled"
        if time.monotonic() > deadline:
            return "the instance ran past its deadline"
        return None

    def _interrupt(self, deadline: float) -> Ended | None:
        """Stop the wait for the task process if it was cancelled or ran too long."""
        assert self._handle is not None
        if self._cancelled.is_set():
            self._handle.kill()
            return CANCELLED
        if time.monotonic() > deadline:
            self._handle.kill()
            return Ended(False, "the node's wall-clock limit killed the task", kind="timeout")
        return None

    def _crash(self, workdir: Path) -> Ended:
        assert self._handle is not None
        rc = self._handle.wait(EXIT_GRACE_S)
        why = f"signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        try:
            tail = (workdir / "runner.log").read_bytes()[-4000:].decode(errors="replace")
        except OSError:
            tail = ""
        return Ended(False, f"the task process died ({why})", tail, kind="crash")

    def _waiter(self, sock: socket.socket) -> _Waiter:
        """A selector over ``sock``, this instance's wake-up pipe and its process's exit."""
        assert self._handle is not None and self._wake_r is not None
        return _Waiter(sock, self._wake_r, self._handle)

    def _serve(
        self,
        proc: WarmProcess,
        token: str | None,
        scope: InstanceScope,
        folder: Path,
        deadline: float,
    ) -> Ended | None:
        assert self._handle is not None
        if proc.conn is None:  # a fresh process: it connects and says hello
            assert token is not None
            with self._waiter(proc.listener) as waiter:
                while proc.conn is None:
                    if (stop := self._interrupt(deadline)) is not None:
                        return stop
                    what = waiter.wait(deadline)
                    if what == _EXITED:
                        return self._crash(proc.workdir)
                    if what != _READY:
                        continue
                    candidate, _ = proc.listener.accept()
                    proc.conn = self._hello(candidate, token, scope, folder, proc.key[0] != "")
        else:  # a warm process: it waits for its next instance
            try:
                protocol.send(proc.conn, {"op": "run", "ctx": self._context(scope, folder)})
            except OSError:
                return self._crash(proc.workdir)
        return self._frames(proc.conn, scope, deadline, proc.workdir, proc.key[0] != "")

    def _context(self, scope: InstanceScope, folder: Path) -> dict[str, Any]:
        item = self.item
        return {
            "swarm_id": item.swarm_id,
            "instance_id": self.instance_id,
            "node_id": scope.node_id,
            "alias": item.alias,
            "iteration": item.iteration,
            "attempt": item.attempt,
            "module": item.module,
            "folder": str(folder),
            "outbox": str(scope.outbox),
            "global_versions": dict(item.global_versions),
        }

    def _hello(
        self,
        conn: socket.socket,
        token: str,
        scope: InstanceScope,
        folder: Path,
        warm: bool = False,
    ) -> socket.socket | None:
        conn.settimeout(HELLO_TIMEOUT_S)
        try:
            msg = _recv_hello(conn)
            args = msg.get("args") or {}
            given = str(args.get("token", "")) if isinstance(args, dict) else ""
            if msg.get("op") != "hello" or not hmac.compare_digest(given.encode(), token.encode()):
                log.warning(
                    "instance %s: rejected a connection with a wrong token", scope.instance_id
                )
                protocol.send(
                    conn, {"id": msg.get("id"), "error": {"code": "auth", "message": "bad token"}}
                )
                conn.close()
                return None
            ctx = self._context(scope, folder)
            if warm:
                ctx["warm"] = True
            protocol.send(conn, {"id": msg.get("id"), "ok": ctx})
        except (OSError, ShoalError, ValueError) as e:
            log.warning("instance %s: bad first frame (%s)", scope.instance_id, e)
            conn.close()
            return None
        conn.settimeout(None)
        return conn

    def _frames(
        self, conn: socket.socket, scope: InstanceScope, deadline: float, workdir: Path, warm: bool
    ) -> Ended | None:
        assert self._handle is not None
        reader = protocol.FrameReader()
        pending = 0  # bytes received since the last complete frame
        with self._waiter(conn) as waiter:
            while True:
                if (stop := self._interrupt(deadline)) is not None:
                    return stop
                held_until = self._held_since + HELD_WAIT_S if self._held else deadline
                what = waiter.wait(min(deadline, held_until))
                if what == _EXITED:
                    return self._crash(workdir)
                if what != _READY:
                    if self._held and time.monotonic() >= held_until:
                        self._send_held(scope)  # the task goes on: do not keep it back
                    continue
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:
                    return self._crash(workdir)
                frames = reader.feed(data)
                if reader.broken is not None:
                    self._handle.kill()
                    why = reader.broken.message
                    return Ended(
                        False, f"the task broke its channel to the node ({why})", kind="crash"
                    )
                pending = 0 if frames else pending + len(data)
                if pending > MAX_PENDING_BYTES:  # values go by file; frames are small
                    self._handle.kill()
                    return Ended(False, "the task sent a frame over the size bound", kind="crash")
                ended = self._batch(conn, scope, frames)
                if ended is not None:
                    if ended is self._fatal or reader.pending() or frames[-1].get("op") != "done":
                        self._handle.kill()  # more after "done": not a process to keep
                    elif not (warm and ended.ok) and self._handle.wait(EXIT_GRACE_S) is None:
                        self._handle.kill()
                    return ended

    def _batch(
        self, conn: socket.socket, scope: InstanceScope, frames: list[dict[str, Any]]
    ) -> Ended | None:
        """Handle the frames of one read; logs and metrics that arrived together go to
        the coordinator in one request (in order, before anything that follows them)."""
        notes: list[dict[str, Any]] = []
        for frame in frames:
            if frame.get("id") is None and frame.get("op") in BATCHED:
                notes.append({"op": frame["op"], "args": frame.get("args") or {}})
                if len(notes) >= ops.MAX_BATCH:
                    self._flush(scope, notes)
                    if self._fatal is not None:
                        return self._fatal
                continue
            self._flush(scope, notes)
            ended = self._fatal or self._frame(conn, scope, frame)
            if ended is not None:
                return ended
        self._flush(scope, notes)
        return self._fatal

    def _flush(self, scope: InstanceScope, notes: list[dict[str, Any]]) -> None:
        if not notes:
            return
        calls = list(notes)
        notes.clear()
        try:
            if len(calls) == 1:
                self.host.proxy.handle(scope, calls[0]["op"], calls[0]["args"])
            else:
                self.host.proxy.handle(scope, ops.BATCH, {"calls": calls})
        except Stopped:
            raise
        except Exception as e:  # one-way: the instance fails when it reports done
            self._failed(f"{calls[0]['op']} failed: {e}", e)

    def _hold(self, scope: InstanceScope, op: str, args: dict[str, Any]) -> None:
        """Keep a one-way call (its value uploaded or read now) for ``done``; send the
        held ones first when there are too many."""
        prepared = self.host.proxy.prepare(scope, op, args)
        value = prepared.get("value")
        size = len(value["inline"]) if isinstance(value, dict) and "inline" in value else 0
        if len(self._held) >= MAX_DONE_CALLS or self._held_bytes + size > HELD_MAX_BYTES:
            self._send_held(scope)
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append({"op": op, "args": prepared})
        self._held_bytes += size

    def _send_held(self, scope: InstanceScope) -> None:
        """Send the held calls on their own, in order (before a call that may read
        what they wrote); a failure fails the instance when it ends, as it would have."""
        held, self._held, self._held_bytes = self._held, [], 0
        for call in held:
            try:
                self.host.proxy.send_prepared(scope, call["op"], call["args"])
            except Stopped:
                raise
            except Exception as e:
                self._failed(f"{call['op']} failed: {e}", e)

    def _failed(self, reason: str, error: Exception) -> None:
        """A call of the task failed: note it for its ``done``, or end the instance now
        when the disk is full (the coordinator's or this node's: no retry helps)."""
        if isinstance(error, ShoalError) and error.code in DISK_FULL_CODES:
            if self._fatal is None:
                log.error("instance %s: %s", self.instance_id, reason)
                self._fatal = Ended(False, reason)
        elif self._notify_error is None:
            self._notify_error = reason

    def _frame(
        self, conn: socket.socket, scope: InstanceScope, frame: dict[str, Any]
    ) -> Ended | None:
        op = frame.get("op")
        if op == "done" and "id" not in frame:
            ok = bool(frame.get("ok"))
            if ok and self._notify_error is not None:
                return Ended(False, self._notify_error)
            return Ended(ok, str(frame.get("error", "")), str(frame.get("traceback", "")))
        rid = frame.get("id")
        args = frame.get("args") or {}
        try:
            if not isinstance(op, str) or not isinstance(args, dict):
                raise protocol.ChannelClosed("malformed request frame")
            if rid is None and op in HELD:
                self._hold(scope, op, args)
                return self._fatal
            self._send_held(scope)
            result = self.host.proxy.handle(scope, op, args)
        except Stopped:
            raise
        except Exception as e:  # the task's request failed: the task sees the error
            if rid is not None:
                with contextlib.suppress(OSError):
                    protocol.send(conn, {"id": rid, "error": protocol.error_payload(e)})
                if isinstance(e, ShoalError) and e.code in DISK_FULL_CODES:
                    self._failed(f"{op} failed: {e}", e)
            else:
                self._failed(f"{op} failed: {e}", e)
            return self._fatal
        if rid is not None:
            with contextlib.suppress(OSError):
                protocol.send(conn, {"id": rid, "ok": result})
        return None
