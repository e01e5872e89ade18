"""The simulator's pool on a Ray cluster (``simulate(..., backend="ray")``).

A thin adapter: the pool is :class:`~shoal._exec.pool.ProcessPoolExecutor`, its workers
are Ray actors instead of child processes. The engine, the world service and the
store stay in the driver (this process). Each actor is one long-lived worker process
somewhere in the cluster (``num_cpus=1``) that runs :func:`shoal._exec.pool_worker.serve`:
it imports a module once and runs many instances of any virtual node, one at a time.

The channel between the driver and an actor is the pool's own: length-prefixed msgpack
frames (codec bytes, never pickle) over a TCP connection that the actor opens to a
listener of the driver at Ray's address of the driver's node, after a hello frame with
a per-run secret. Large values go where the local pool puts them: segment files in
the run's blob folder, so results stream into the aggregator from memory-mapped files
and its memory stays O(model). The blob folder must therefore be the same folder on
every Ray node (one machine, or a shared filesystem mounted at the same path): each
actor checks it at connect time, and the run stops with ``sim.ray_store`` otherwise.

A worker that dies (its process killed, its node lost) closes its connection: the
pool reports the instance it was running as a crash (the engine's retry rules apply),
puts the jobs queued on it back in the queue, and starts a new actor in its place.
Ray never restarts an actor by itself (``max_restarts=0``): the pool does.

``ray`` is an optional dependency (``pip install 'shoal[ray]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import socket
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError
from shoal._exec.jobs import OnDone, OnStarted
from shoal._exec.pool import Group, ProcessPoolExecutor, _Worker, _worker_env
from shoal._runtime import protocol
from shoal._world.service import WorldService

#: Seconds the pool waits for a new actor to connect: Ray may have to start a worker
#: process (seconds on a busy machine) or wait for a node with a free CPU.
CONNECT_TIMEOUT_S = 180.0
#: Seconds an actor waits for the driver to accept its connection and read its hello.
HELLO_TIMEOUT_S = 30.0
#: The loopback address of a Ray that shoal starts itself: Ray replaces 127.0.0.1 by the
#: machine's network address, and a Ray that serves this machine alone has no reason
#: to listen there (nor a cluster token: anyone reaching it could run code).
LOCAL_NODE_IP = "127.0.0.2"
_MARKER = ".shoal-ray-"  # the blob folder's marker file: an actor that reads it sees it

# How this process is connected to Ray: None (not by shoal), or the address shoal
# connected to ("" for a local Ray it started).
_connected: str | None = None


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ShoalError(
            f"backend 'ray' needs the ray package ({e})",
            code="sim.ray",
            hint="pip install 'shoal[ray]' (on the driver and on every node of the cluster)",
        ) from None
    return ray


def connect(address: str | None) -> Any:
    """Connect this process to Ray and return the ``ray`` module.

    ``address`` None: the Ray this process is already connected to (``ray.init`` by the
    caller), else a new local one on this machine (it stays up for later runs of this
    process, as ``ray.init`` does; ``ray.shutdown()`` stops it). ``"auto"``: the
    cluster a ``ray start`` on this machine runs; ``"HOST:PORT"``: that cluster's head.

    Raises
    ------
    ShoalError
        ``sim.ray`` when ray is missing, the address is a Ray client address
        (``ray://``), Ray is already connected elsewhere, or the connection fails.
    """
    global _connected
    ray = _ray()
    if address is not None and address.startswith("ray://"):
        raise ShoalError(
            f"ray address {address!r} is a Ray client address",
            code="sim.ray",
            hint="run the simulation on a node of the cluster and pass --address auto "
            "(its workers connect back to the driver, which a Ray client is not on)",
        )
    wanted = "" if address is None else address
    if ray.is_initialized():
        if address is None or _connected == wanted:
            return ray
        if _connected is None:
            raise ShoalError(
                f"this process is already connected to Ray (ray.init), not by shoal, "
                f"and ray_address={address!r} asks for another connection",
                code="sim.ray",
                hint="pass ray_address=None to use that connection, or ray.shutdown() first",
            )
        ray.shutdown()  # shoal's own earlier connection, to another cluster
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address is None:
        kwargs.update(include_dashboard=False, _node_ip_address=LOCAL_NODE_IP)
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError...
        raise ShoalError(
            f"could not connect to Ray at {address or 'a new local instance'}: "
            f"{type(e).__name__}: {e}",
            code="sim.ray",
            hint="start the cluster first (ray start --head on one machine, ray start "
            "--address HEAD:PORT on the others) and pass --address auto on a node of it",
        ) from None
    _connected = wanted
    return ray


def cluster_cpus(ray: Any) -> int:
    """The cluster's CPUs (at least 1): one worker each by default."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class RayWorker:
    """The actor: one pool worker process on some node of the cluster."""

    def serve(self, host: str, port: int, token: str, wid: int, blobs: str) -> str:
        """Connect to the driver and run its jobs until it says ``exit``; return how
        it ended."""
        import ray

        from shoal._exec.pool_worker import serve

        node = ray.get_runtime_context().get_node_id()
        marker = Path(blobs) / f"{_MARKER}{token[:16]}"
        try:
            shared = hmac.compare_digest(marker.read_text(), token)
        except OSError:
            shared = False
        sock = socket.create_connection((host, port), timeout=HELLO_TIMEOUT_S)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = {"op": "hello", "token": token, "worker": wid, "node": node}
            protocol.send(sock, {**hello, "pid": os.getpid(), "shared": shared})
            if shared:
                serve(sock, Path(blobs))
        finally:
            sock.close()
        return "exit" if shared else "no shared blob folder"


class _Actor:
    """A Ray actor seen as the pool's worker process (:class:`~shoal._exec.pool.WorkerProcess`)."""

    def __init__(self, ray: Any, handle: Any, ref: Any, wid: int) -> None:
        self._ray = ray
        self.handle = handle
        self.ref = ref  # the serve() call: it resolves when the actor ends
        self.wid = wid
        self.node = "?"
        self.pid = 0
        self.returncode: int | None = None
        self.why = ""

    def _settle(self) -> None:
        try:
            self.why = str(self._ray.get(self.ref))
            self.returncode = 0
        except Exception as e:  # ActorDiedError and friends: the actor is gone
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self.why = f"{type(e).__name__}: {first}"[:300]
            self.returncode = -9

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _ = self._ray.wait([self.ref], timeout=0)
            if ready:
                self._settle()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            ready, _ = self._ray.wait([self.ref], timeout=timeout)
            if not ready:
                raise subprocess.TimeoutExpired(f"ray actor {self.wid}", timeout or 0.0)
            self._settle()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self._ray.kill(self.handle, no_restart=True)


class RayPoolExecutor(ProcessPoolExecutor):
    """The simulator's process pool with Ray actors as its workers (see the module).

    Parameters
    ----------
    service, on_started, on_done
        As for :class:`~shoal._exec.pool.ProcessPoolExecutor`.
    workers
        How many actors (one CPU each); 0: one per CPU of the cluster.
    blobs
        The run's blob folder: every Ray node must see it at this path.
    address
        The Ray cluster (see :func:`connect`).
    limit
        The most actors to start when ``workers`` is 0 (a run of 3 virtual nodes needs
        no more than 3).
    connect_timeout
        Seconds to wait for an actor to start and connect.
    """

    def __init__(
        self,
        service: WorldService,
        on_started: OnStarted,
        on_done: OnDone,
        workers: int,
        blobs: Path,
        address: str | None = None,
        limit: int | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self._ray_mod = ray = connect(address)
        self._connect_timeout = connect_timeout
        if workers < 1:
            workers = min(cluster_cpus(ray), limit or 1 << 30)
        self.workers = workers
        self._token = secrets.token_hex(32)
        self._marker = blobs / f"{_MARKER}{self._token[:16]}"
        self._marker.write_text(self._token)
        host = ray.util.get_node_ip_address()
        self._listener = socket.create_server((host, 0), backlog=max(16, 2 * workers))
        self._address = (host, self._listener.getsockname()[1])
        self._blob_dir = str(blobs)
        env = _worker_env()
        self._actor_cls = ray.remote(RayWorker).options(
            num_cpus=1,
            max_restarts=0,
            max_task_retries=0,
            runtime_env={"env_vars": {k: v for k, v in env.items() if k.startswith("MALLOC_")}},
        )
        self._wids = iter(range(1 << 62))
        self._starting: deque[_Actor] = deque(self._launch() for _ in range(workers))
        self._arrived: dict[int, tuple[socket.socket, dict[str, Any]]] = {}
        try:
            super().__init__(service, on_started, on_done, workers, blobs)
        except BaseException:
            self._close_ray_side()
            raise

    # ------------------------------------------------------------------ actors
    def _launch(self) -> _Actor:
        wid = next(self._wids)
        handle = self._actor_cls.remote()
        host, port = self._address
        ref = handle.serve.remote(host, port, self._token, wid, self._blob_dir)
        return _Actor(self._ray_mod, handle, ref, wid)

    def _spawn(self, group: Group) -> _Worker:
        """Start an actor (or take one started ahead) and wait until it connects."""
        actor = self._starting.popleft() if self._starting else self._launch()
        sock, hello = self._await(actor)
        actor.node, actor.pid = str(hello.get("node", "?")), int(hello.get("pid", 0))
        queue = self._queues.setdefault(group, deque())
        w = _Worker(actor, sock, protocol.FrameReader(), group, queue)
        self._workers.append(w)
        self._sel.register(sock, 1, w)  # selectors.EVENT_READ
        return w

    def _await(self, actor: _Actor) -> tuple[socket.socket, dict[str, Any]]:
        """The connection of ``actor``, once it has connected and said hello."""
        end = time.monotonic() + self._connect_timeout
        while actor.wid not in self._arrived:
            left = end - time.monotonic()
            if left <= 0:
                actor.kill()
                raise self._no_worker(
                    actor, f"it did not connect within {self._connect_timeout:g}s"
                )
            if actor.poll() is not None:
                raise self._no_worker(actor, f"it ended before connecting ({actor.why})")
            self._listener.settimeout(min(1.0, left))
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._hello(sock)
        sock, hello = self._arrived.pop(actor.wid)
        if not hello.get("shared"):
            sock.close()
            raise ShoalError(
                f"the Ray worker on node {hello.get('node')} does not see the run's blob "
                f"folder {self._blob_dir} (values move through it)",
                code="sim.ray_store",
                hint="put run_dir on a filesystem that every Ray node mounts at the same "
                "path (e.g. NFS), and pass run_dir=... / --run-dir",
            )
        return sock, hello

    def _hello(self, sock: socket.socket) -> None:
        """Read a new connection's hello; keep it if it carries this run's secret."""
        try:
            sock.settimeout(HELLO_TIMEOUT_S)
            hello = protocol.recv(sock)
            sock.settimeout(None)
        except (OSError, ShoalError):
            sock.close()
            return
        token = hello.get("token")
        wid = hello.get("worker")
        if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
            sock.close()  # not one of ours
            return
        if not isinstance(wid, int):
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arrived[wid] = (sock, hello)

    def _no_worker(self, actor: _Actor, why: str) -> ShoalError:
        try:
            free = self._ray_mod.available_resources().get("CPU", 0)
            total = self._ray_mod.cluster_resources().get("CPU", 0)
            room = f"; the cluster has {free:g} of {total:g} CPUs free"
        except Exception:  # the cluster itself may be what failed
            room = ""
        return ShoalError(
            f"a Ray worker of the simulation could not start: {why}{room}",
            code="sim.ray",
            hint="check the cluster (ray status); each worker takes 1 CPU: pass fewer "
            "workers (--workers), and install shoal on every node",
        )

    def _retire(self, w: _Worker) -> None:
        """Kill a worker's actor; its jobs are no longer owned by anyone."""
        self._sel.unregister(w.sock)
        self._workers.remove(w)
        assert isinstance(w.proc, _Actor)
        w.proc.kill()  # frees its CPU at once; nothing here waits for Ray to end it
        w.sock.close()
        for job in w.jobs:
            self._owner.pop(job.info.instance_id, None)

    def _death(self, w: _Worker) -> str:
        actor = w.proc
        assert isinstance(actor, _Actor)
        why = actor.why or "its connection closed"
        return f"Ray actor pid {actor.pid} on node {actor.node[:12]}: {why}"

    def close(self) -> None:
        """Stop every actor and the listener (a Ray that shoal started stays up for
        later runs of this process)."""
        try:
            super().close()
        finally:
            self._close_ray_side()

    def _close_ray_side(self) -> None:
        for actor in self._starting:
            actor.kill()
        self._starting.clear()
        for sock, _ in self._arrived.values():
            sock.close()
        self._arrived.clear()
        self._listener.close()
        self._marker.unlink(missing_ok=True)
