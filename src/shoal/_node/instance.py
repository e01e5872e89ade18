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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal._api.schemas import RunInstruction
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
from shoal._node.proxy import InstanceScope, WorldProxy
from shoal._runtime import ops, protocol

log = logging.getLogger("shoal.node")
# (swarm, network) pairs whose "no effect here" warning was logged: once each.
_WARNED_NETWORKS: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()

TICK_S = 0.2  # how often a waiting instance thread checks cancel, timeout and exit
HELLO_TIMEOUT_S = 10.0
HELLO_MAX_BYTES = 4096
MAX_PENDING_BYTES = 256 * 1024 * 1024  # an unfinished frame larger than this: kill
EXIT_GRACE_S = 10.0  # after "done", how long the process may take to exit
TIMEOUT_GRACE_S = 5.0  # past the task's timeout, when the agent kills it itself
# The handle's own wall-clock limit, past the agent's deadline: it stops the task even
# when this thread is stuck (the agent's kill, which comes first, names the timeout).
WALL_BACKSTOP_S = 5.0
BATCHED = ops.names(batched=True)  # one-way records sent to the coordinator in batches


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


class InstanceRun:
    """Runs one ``run`` instruction to its end (call :meth:`run` in a thread)."""

    def __init__(self, host: Host, item: RunInstruction) -> None:
        self.host = host
        self.item = item
        self.instance_id = item.instance_id
        self._cancelled = threading.Event()
        self._handle: TaskHandle | None = None
        self._notify_error: str | None = None
        self._fatal: Ended | None = None  # ends the instance now (a full disk)

    def cancel(self, reason: str) -> None:
        """Stop the instance; nothing is reported (the coordinator already decided)."""
        log.info("cancelling %s: %s", self.instance_id, reason)
        self._cancelled.set()

    def run(self) -> None:
        """Thread body."""
        try:
            with self.host.slots:
                if self._cancelled.is_set():
                    return
                ended = self._run()
            if ended is not None and ended is not CANCELLED and not self._cancelled.is_set():
                self.host.client.done(self.instance_id, ended.__dict__)
        except Stopped:
            pass
        except Exception as e:
            # Never leave the coordinator waiting: report the agent's own failure.
            log.exception("instance %s: the agent failed to run it", self.instance_id)
            ended = Ended(False, f"the node agent failed to run it: {e}", kind="crash")
            with contextlib.suppress(Exception):
                self.host.client.done(self.instance_id, ended.__dict__)
        finally:
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
        key = hashlib.sha256(self.instance_id.encode()).hexdigest()[:20]
        workdir = cfg.state_dir / "work" / key
        # The values it is given, linked from the cache (which it never sees whole).
        view = cfg.state_dir / "work" / f"{key}.view"
        for old in (workdir, view):
            shutil.rmtree(old, ignore_errors=True)
        (workdir / "outbox").mkdir(parents=True)
        view.mkdir(mode=0o700)
        sock_path = self.host.socket_dir / f"{key}.sock"
        datasets = {n: cfg.datasets[n] for n in item.datasets if n in cfg.datasets}
        spec = InstanceSpec(
            self.instance_id,
            image[0],
            image[1],
            workdir,
            folder,
            datasets,
            view,
            *requested_limits(item, cfg.limits),
            image=item.image,
            wall_s=None if (budget := self._budget()) is None else budget + WALL_BACKSTOP_S,
            # Only a task that asked for a GPU sees the GPU's device files.
            devices=self.host.gpu_devices if item.gpu else (),
            network=self._network(),
        )
        outbox = (workdir / "outbox").resolve()  # fixed before any task code runs
        scope = InstanceScope(self.instance_id, cfg.node_id, datasets, outbox, view)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock_path.unlink(missing_ok=True)
            listener.bind(str(sock_path))
            sock_path.chmod(0o600)
            listener.listen(4)
            token = secrets.token_urlsafe(32)
            try:
                self._handle = self.host.executor.start(spec, sock_path, token)
            except Exception as e:  # a sandbox that cannot start fails this instance only
                log.warning("instance %s: the executor could not start it: %s", spec.instance_id, e)
                return Ended(False, f"the executor could not start the task: {e}", kind="crash")
            deadline = self._deadline()
            # While the coordinator is unreachable, a call of this instance's thread
            # stops retrying at its cancel or deadline, so the task is still stopped then.
            with abandon_when(lambda: self._abandon_reason(deadline)):
                with contextlib.suppress(Abandoned):  # _serve stops it at once
                    self.host.client.started(self.instance_id)
                ended = self._serve(listener, token, scope, folder, workdir, deadline)
            return self._explained(ended)
        finally:
            if self._handle is not None and self._handle.poll() is None:
                self._handle.kill()
            listener.close()
            sock_path.unlink(missing_ok=True)
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(view, ignore_errors=True)

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

    def _serve(
        self,
        listener: socket.socket,
        token: str,
        scope: InstanceScope,
        folder: Path,
        workdir: Path,
        deadline: float,
    ) -> Ended | None:
        assert self._handle is not None
        conn = None
        while conn is None:
            if (stop := self._interrupt(deadline)) is not None:
                return stop
            if self._handle.poll() is not None:
                return self._crash(workdir)
            listener.settimeout(TICK_S)
            try:
                candidate, _ = listener.accept()
            except TimeoutError:
                continue
            conn = self._hello(candidate, token, scope, folder)
        with conn:
            return self._frames(conn, scope, deadline, workdir)

    def _hello(
        self, conn: socket.socket, token: str, scope: InstanceScope, folder: Path
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
            item = self.item
            ctx = {
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
            protocol.send(conn, {"id": msg.get("id"), "ok": ctx})
        except (OSError, ShoalError, ValueError) as e:
            log.warning("instance %s: bad first frame (%s)", scope.instance_id, e)
            conn.close()
            return None
        conn.settimeout(None)
        return conn

    def _frames(
        self, conn: socket.socket, scope: InstanceScope, deadline: float, workdir: Path
    ) -> Ended | None:
        assert self._handle is not None
        reader = protocol.FrameReader()
        pending = 0  # bytes received since the last complete frame
        with selectors.DefaultSelector() as sel:
            sel.register(conn, selectors.EVENT_READ)
            while True:
                if (stop := self._interrupt(deadline)) is not None:
                    return stop
                if not sel.select(TICK_S):
                    if self._handle.poll() is not None:
                        return self._crash(workdir)
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
                    if ended is self._fatal or self._handle.wait(EXIT_GRACE_S) is None:
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
