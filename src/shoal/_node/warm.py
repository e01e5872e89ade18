"""Warm task processes: a node keeps a task process alive after its instance and runs
the next instance of the same module of the same swarm in it.

Starting a sandboxed interpreter that imports shoal, numpy and the module costs a
few hundred milliseconds, most of a small instance. Like the simulator's pool
(:mod:`shoal._exec.pool`), a warm process imports its module once and then runs
instance after instance: the agent sends it the next instance's context as a ``run``
frame on the connection it already authenticated (:mod:`shoal._node.task_runner`).

One trust domain per process: a process is reused only for the same *key* (swarm,
module bundle, image, datasets; the node's limits are the same for every instance),
never across swarms or modules, so nothing one swarm's code leaves in a process
(module globals, files in its ``/tmp``, its environment) is ever seen by another
swarm's instance. Between two instances the agent empties the process's outbox and its
view of the values it was given, so an instance sees only its own values.

A process is retired (killed, its folders removed) after an instance that did not
succeed (an error, a crash, a limit, a timeout or a cancel: the next instance gets a
fresh process), after ``max_runs`` instances, when it has been idle for
``idle_timeout_s``, when more than ``max_idle`` processes are idle, and when the agent
stops. Limits that count a process's whole life cannot be applied per instance in a
reused one: RLIMIT_CPU (``cpu_seconds``) cannot be raised again from inside, so a node
with ``cpu_seconds`` set starts a fresh process for every instance.
"""

from __future__ import annotations

import contextlib
import logging
import select
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shoal._exec.base import TaskHandle

log = logging.getLogger("shoal.node")

# What makes two instances share a process: (swarm, module bundle digest, image,
# datasets). The node's limits are the same for all of its instances.
WarmKey = tuple[str, str, str, tuple[str, ...], int, str | None]


class WarmSettings(BaseModel):
    """The ``[warm]`` table of node.toml: warm task processes (on by default).

    Attributes
    ----------
    enabled
        Keep task processes for the next instance of the same module of the same
        swarm. ``false``: a fresh process for every instance.
    idle_timeout_s
        An idle process is retired after this many seconds.
    max_runs
        A process is retired after this many instances.
    max_idle
        At most this many idle processes are kept (the least recently used go first).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_runs: Annotated[int, Field(ge=1)] = 1000
    max_idle: Annotated[int, Field(ge=0)] = 16


@dataclass(eq=False)
class WarmProcess:
    """A task process and what it keeps across instances.

    Attributes
    ----------
    key
        The instances it may run.
    handle
        The process.
    conn
        Its authenticated connection (None until it said hello).
    listener, sock_path
        The Unix socket it connects to.
    workdir, view, outbox
        Its private folder, its view of the values it is given, and the folder its
        large values are written to (``outbox`` resolved before any task code ran).
    runs
        Instances it has run to their end.
    """

    key: WarmKey
    handle: TaskHandle
    listener: socket.socket
    sock_path: Path
    workdir: Path
    view: Path
    outbox: Path
    conn: socket.socket | None = None
    runs: int = 0
    idle_since: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        """Kill the process and remove what it used."""
        if self.handle.poll() is None:
            self.handle.kill()
        for s in (self.conn, self.listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self.sock_path.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.view, ignore_errors=True)

    def reset(self) -> None:
        """Empty the outbox and the view between two instances (the folders stay: they
        are bound into the sandbox)."""
        for folder in (self.outbox, self.view):
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _quiet(conn: socket.socket | None) -> bool:
    """Whether an idle process sent nothing since its last ``done`` (what it sent
    would be read as the next instance's)."""
    if conn is None:
        return False
    readable, _, _ = select.select([conn], [], [], 0)
    return not readable


class WarmPool:
    """The idle warm processes of a node, by key.

    Parameters
    ----------
    settings
        The node's ``[warm]`` table.
    stop
        Set when the agent stops: the reaper thread ends.
    """

    def __init__(self, settings: WarmSettings, stop: threading.Event) -> None:
        self.settings = settings
        self._stop = stop
        self._lock = threading.Lock()
        self._idle: dict[WarmKey, list[WarmProcess]] = {}
        self._wake = threading.Event()
        # Warm processes are started from this one long-lived thread: a sandbox dies
        # with the *thread* that started it (bwrap --die-with-parent is the Linux
        # parent-death signal, sent when that thread exits), and an instance's thread
        # ends with its instance.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="warm-spawn")
        self.started = 0  # processes made warm (tests)
        self.reused = 0  # instances that ran in a process another one left (tests)
        self._reaper = threading.Thread(target=self._reap, name="warm-reaper", daemon=True)
        self._reaper.start()

    def spawn(self, start: Callable[[], TaskHandle]) -> TaskHandle:
        """``start()`` run on the pool's spawning thread (see ``__init__``)."""
        return self._spawner.submit(start).result()

    def take(self, key: WarmKey) -> WarmProcess | None:
        """An idle process for ``key`` (the most recently used), or None."""
        with self._lock:
            procs = self._idle.get(key)
            while procs:
                proc = procs.pop()
                if not procs:
                    del self._idle[key]
                if proc.handle.poll() is None and _quiet(proc.conn):
                    self.reused += 1
                    return proc
                self._close_later([proc])  # it died, or spoke, while idle
                procs = self._idle.get(key)
        return None

    def give(self, proc: WarmProcess) -> None:
        """Keep ``proc`` for the next instance of its key, or retire it (``max_runs``
        reached, it exited, or no room)."""
        if proc.runs >= self.settings.max_runs or proc.handle.poll() is not None:
            proc.close()
            return
        proc.reset()
        proc.idle_since = time.monotonic()
        dropped: list[WarmProcess] = []
        with self._lock:
            self._idle.setdefault(proc.key, []).append(proc)
            idle = sorted((p for ps in self._idle.values() for p in ps), key=lambda p: p.idle_since)
            while len(idle) > self.settings.max_idle:
                dropped.append(self._remove(idle.pop(0)))
        self._close_later(dropped)
        self._wake.set()

    def retire_swarm(self, swarm_id: str) -> None:
        """Retire every idle process of a swarm."""
        with self._lock:
            keys = [k for k in self._idle if k[0] == swarm_id]
            dropped = [p for k in keys for p in self._idle.pop(k)]
        self._close_later(dropped)

    def idle(self) -> int:
        """How many processes are idle."""
        with self._lock:
            return sum(len(ps) for ps in self._idle.values())

    def close(self) -> None:
        """Retire every idle process (the agent is stopping)."""
        with self._lock:
            dropped = [p for ps in self._idle.values() for p in ps]
            self._idle.clear()
        for p in dropped:
            p.close()
        self._wake.set()
        self._spawner.shutdown(wait=False)

    # ----------------------------------------------------------------- private
    def _remove(self, proc: WarmProcess) -> WarmProcess:
        procs = self._idle[proc.key]
        procs.remove(proc)
        if not procs:
            del self._idle[proc.key]
        return proc

    def _close_later(self, procs: list[WarmProcess]) -> None:
        """Close processes off the caller's thread (a kill waits for the process)."""
        if procs:

            def close() -> None:
                for p in procs:
                    p.close()

            threading.Thread(target=close, name="warm-retire", daemon=True).start()

    def _reap(self) -> None:
        """Retire processes idle past ``idle_timeout_s``; sleeps until the oldest is
        due (or a process is given back), not on a fixed tick."""
        limit = self.settings.idle_timeout_s
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                procs = [p for ps in self._idle.values() for p in ps]
                due = [self._remove(p) for p in procs if now - p.idle_since >= limit]
                left = [p.idle_since + limit - now for p in procs if p not in due]
            for p in due:
                log.debug("retiring an idle warm process of %s", p.key[0])
                p.close()
            self._wake.wait(min(left) if left else None)
            self._wake.clear()
