"""The simulator's process pool: a fixed number of worker processes that each run
instances of any virtual node, many in turn (optionally each under bubblewrap).

Cancelling a job that runs in a worker kills that worker and starts a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shoal._errors import ShoalError
from shoal._exec.jobs import Job, OnDone, OnStarted
from shoal._exec.pool_bwrap import BwrapSandbox
from shoal._runtime import ops, protocol
from shoal._runtime.loader import Outcome
from shoal._world.service import WorldService

WORKER_MODULE = "shoal._exec.pool_worker"
CRASH_EXIT_S = 1.0  # how long a worker whose socket closed may take to exit by itself
SPAWN_GUESS_S = 0.3  # a worker's start-up until it is ready, before one was measured

# Which jobs a worker may run: None in the plain pool (any), else the set of datasets
# its modules declare (a sandboxed worker sees only those).
Group = frozenset[str] | None


class WorkerProcess(Protocol):
    """What the pool needs of a worker's process: a ``subprocess.Popen`` here, a Ray
    actor in :mod:`shoal._exec.pool_ray`."""

    @property
    def returncode(self) -> int | None:
        """Its exit status once it ended (negative: the signal that ended it)."""
        ...

    def poll(self) -> int | None:
        """Its exit status if it ended, else None."""
        ...

    def send_signal(self, sig: int) -> None:
        """Send it a signal (the pool sends only SIGKILL)."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds for it to end (``subprocess.TimeoutExpired``)."""
        ...


@dataclass(eq=False)
class _Worker:
    proc: WorkerProcess
    sock: socket.socket
    reader: protocol.FrameReader
    group: Group
    queue: deque[Job]  # its group's queue: where it takes jobs from
    # Jobs sent to this worker, in order: the first one is running (or about to), the
    # rest wait in its socket so it never idles while the driver handles a result.
    jobs: deque[Job] = field(default_factory=deque)
    ready: bool = False
    head_since: float = 0.0  # when the first of ``jobs`` started
    draining: bool = False  # takes no more jobs; retired once idle (another group needs it)
    # Its instance waits on a world.invoke call: it takes no jobs until that instance
    # ends, and another worker runs in its place meanwhile (the invoked instances need one).
    waiting: bool = False
    spawned: float = field(default_factory=time.monotonic)


class ProcessPoolExecutor:
    """A fixed pool of worker processes that run instances of any virtual node.

    Each worker is sent jobs ahead, so it never waits for the driver between two: about
    ``ahead_s`` seconds of work (from a running mean of instance times), at least 2
    and at most ``max_depth`` jobs. Short instances (under a millisecond) thus queue
    8 deep, long ones 2, so a worker never sits on queued long jobs that another idle
    worker could run. An instance counts as started when its worker starts it, not
    when it is queued there: its timeout does not tick while it waits. While every
    worker has plenty queued, the driver lets several instances end before it wakes
    (see ``_coalesce``).

    Cancelling a job that is running (or may be) kills its worker and starts a fresh
    one; the worker's other jobs go back to the front of the queue (re-running one is
    safe: a rerun replaces its results).

    Without ``sandbox`` (the default) the ``workers`` plain child processes start at
    once and each runs any job. With ``sandbox`` every worker runs under bubblewrap
    (see :class:`~shoal._exec.pool_bwrap.BwrapSandbox`) and sees only the datasets its
    module declares: workers are grouped by a module's set of declared datasets, a
    group's workers start when its first job arrives, each job goes to a worker of its
    group, and there are never more than ``workers`` in all. A group without a worker
    takes the place of an idle worker of another group (or of a busy one of a group
    that has several, once it is done with the jobs it was sent); a group that has
    workers gets one more in an idle worker's place only when that saves more time than
    a worker start costs (:meth:`_worth_growing`).

    Attributes
    ----------
    enforces
        Nothing in the plain pool; the sandbox's restrictions with ``sandbox``.
    """

    def __init__(
        self,
        service: WorldService,
        on_started: OnStarted,
        on_done: OnDone,
        workers: int,
        blobs: Path,
        ahead_s: float = 0.005,
        max_depth: int = 8,
        sandbox: BwrapSandbox | None = None,
    ) -> None:
        if workers < 1:
            raise ShoalError(
                f"workers={workers} must be >= 1",
                code="sim.workers",
                hint="pass --workers 1 or more",
            )
        self._service = service
        self._on_started = on_started
        self._on_done = on_done
        self._blobs = blobs
        self._ahead_s = ahead_s
        self._max_depth = max_depth
        self._depth = 2
        self._mean_s = 0.0  # running mean of instance times; 0: none seen yet
        self._epoch = 0  # globals written so far; orders the versions a worker hears of
        self._sandbox = sandbox
        self._size = workers
        self._spawn_s = SPAWN_GUESS_S  # running mean of worker start-up times
        self._grouped = sandbox is not None
        self.enforces: frozenset[str] = sandbox.enforces if sandbox is not None else frozenset()
        # Errors of one-way requests (results.add) fail the instance when it reports done.
        self._notify_errors: dict[str, str] = {}
        self._queue: deque[Job] = deque()  # the plain pool's one queue
        self._queues: dict[Group, deque[Job]] = {None: self._queue}
        self._cancelled: set[str] = set()
        self._sel = selectors.DefaultSelector()
        self._workers: list[_Worker] = []
        self._owner: dict[str, _Worker] = {}  # instance id -> the worker holding it
        # One receive buffer for every read: recv(n) would allocate n bytes each time.
        self._rbuf = bytearray(1 << 20)
        self._rview = memoryview(self._rbuf)
        if not self._grouped:
            for _ in range(workers):
                self._spawn(None)

    # ----------------------------------------------------------------- workers
    def _spawn(self, group: Group) -> _Worker:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", WORKER_MODULE, str(theirs.fileno()), str(self._blobs)]
        env = _worker_env()
        if self._sandbox is not None:  # the socket is an inherited fd: it crosses bwrap
            argv, env = self._sandbox.wrap(argv, env, group or frozenset())
        proc = subprocess.Popen(
            argv,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own session (process group): a Ctrl-C at the terminal reaches the driver only,
            # which stops the run cleanly and then its workers (no KeyboardInterrupt
            # tracebacks from workers). A worker still exits when the driver goes away.
            start_new_session=True,
        )
        theirs.close()
        queue = self._queues.setdefault(group, deque())
        w = _Worker(proc, ours, protocol.FrameReader(), group, queue)
        self._workers.append(w)
        self._sel.register(ours, selectors.EVENT_READ, w)
        return w

    def _retire(self, w: _Worker) -> None:
        """Kill a worker; its jobs are no longer owned by anyone."""
        self._sel.unregister(w.sock)
        self._workers.remove(w)
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGKILL)
        w.sock.close()
        w.proc.wait(timeout=30)
        for job in w.jobs:
            self._owner.pop(job.info.instance_id, None)

    def _replace(self, w: _Worker, requeue: list[Job]) -> None:
        self._retire(w)
        w.queue.extendleft(reversed(requeue))
        if self._grouped:
            self._place()
        elif self._active() < self._size:
            self._spawn(None)

    def _active(self) -> int:
        """Workers that take jobs (not waiting on a world.invoke call)."""
        return sum(1 for w in self._workers if not w.waiting)

    def _limit(self) -> int:
        """How many workers may run: ``workers``, plus one per worker whose instance
        waits on a world.invoke call."""
        return self._size + sum(1 for w in self._workers if w.waiting)

    def _start_waiting(self, w: _Worker) -> None:
        """The instance ``w`` runs called world.invoke: its invoked instances must not
        queue behind it. The jobs sent ahead to it go back to the front of the queue
        (the worker is told to skip them), and another worker takes its place."""
        w.waiting = True
        ahead = list(w.jobs)[1:]
        if ahead:
            head = w.jobs[0]
            w.jobs.clear()
            w.jobs.append(head)
            for job in ahead:
                self._owner.pop(job.info.instance_id, None)
            w.queue.extendleft(reversed(ahead))
            with contextlib.suppress(OSError):
                protocol.send(w.sock, {"op": "skip", "ids": [j.info.instance_id for j in ahead]})
        if self._grouped:
            self._place()
        elif self._active() < self._size:
            self._spawn(None)

    def _stop_waiting(self, w: _Worker) -> None:
        """The instance that waited on ``w`` ended: ``w`` takes jobs again, or is
        retired if the pool has its ``workers`` without it."""
        w.waiting = False
        if self._active() > self._size and not w.jobs:
            self._retire(w)

    def _place(self) -> None:
        """Give each group with queued jobs the workers it needs, within ``workers``
        in all (sandboxed pool only): retire drained workers, start a group's first
        worker (in the place of an idle one of another group, or by draining one of a
        group that has several), and add workers while a group has more queued than its
        workers can take."""
        for w in [w for w in self._workers if w.draining and not w.jobs]:
            self._retire(w)
        for group, queue in self._queues.items():
            if not queue:
                continue
            mine = [
                w for w in self._workers if w.group == group and not w.draining and not w.waiting
            ]
            room = sum(self._depth - len(w.jobs) if w.ready else self._depth for w in mine)
            if mine and len(queue) <= room:
                continue
            if len(self._workers) < self._limit():
                self._spawn(group)
                continue
            idle = [
                w
                for w in self._workers
                if w.group != group and not w.jobs and w.ready and not w.draining
            ]
            spare = [w for w in idle if not self._queues[w.group]]
            if not mine:  # it has none: it takes an idle worker's place, or waits for one
                if idle:
                    self._retire((spare or idle)[0])
                    self._spawn(group)
                elif not any(w.draining for w in self._workers):
                    self._drain_one_for(group)
            elif spare and self._worth_growing(len(queue), len(mine)):
                self._retire(spare[0])
                self._spawn(group)

    def _worth_growing(self, queued: int, workers: int) -> bool:
        """Whether one more worker for a group with ``workers`` and ``queued`` jobs
        saves more time than starting it costs (the jobs' mean time so far; no guess
        before one has ended). A swarm whose aggregator declares no dataset would
        otherwise restart a worker twice per iteration for a few short jobs."""
        saved = queued * self._mean_s / (workers * (workers + 1))
        return saved > self._spawn_s

    def _drain_one_for(self, group: Group) -> None:
        """Stop feeding a worker of the group with the most workers (if it has several,
        or needs none), so that ``group`` gets its place once it is done."""
        counts: dict[Group, list[_Worker]] = {}
        for w in self._workers:
            if w.group != group and not w.draining:
                counts.setdefault(w.group, []).append(w)
        if not counts:
            return
        other, theirs = max(counts.items(), key=lambda kv: len(kv[1]))
        if len(theirs) > 1 or not self._queues[other]:
            # It runs what it was sent (jobs in its socket cannot be taken back).
            min(theirs, key=lambda w: len(w.jobs)).draining = True

    # ---------------------------------------------------------------- interface
    def submit(self, job: Job) -> None:
        """Queue a job (a worker with room starts on it at once)."""
        if self._grouped:
            self._queues.setdefault(job.datasets, deque()).append(job)
            self._place()
        else:
            self._queue.append(job)
        # A worker with room starts at once: queueing an iteration's 1000 jobs takes the
        # driver ~3 ms, which the workers would otherwise spend idle.
        for w in self._workers:
            if w.ready and len(w.jobs) < self._depth:
                self._assign(w)

    def cancel(self, instance_id: str) -> None:
        """Drop a queued job, or kill the worker running it (and start another)."""
        self._notify_errors.pop(instance_id, None)
        w = self._owner.get(instance_id)
        if w is None:
            self._cancelled.add(instance_id)  # still in our queue: skipped when reached
            return
        others = [j for j in w.jobs if j.info.instance_id != instance_id]
        self._replace(w, others)

    def busy(self) -> bool:
        """Whether a job is queued or running."""
        return bool(self._owner) or any(
            j.info.instance_id not in self._cancelled for q in self._queues.values() for j in q
        )

    def _assign(self, w: _Worker) -> None:
        if w.draining or w.waiting:
            return
        queue = w.queue
        while queue and len(w.jobs) < self._depth:
            job = queue.popleft()
            i = job.info
            if i.instance_id in self._cancelled:
                self._cancelled.discard(i.instance_id)
                continue
            w.jobs.append(job)
            self._owner[i.instance_id] = w
            if len(w.jobs) == 1:
                self._start_head(w)
            protocol.send(
                w.sock,
                {
                    "op": "run",
                    "module": job.module,
                    "folder": str(job.folder),
                    "globals": self._service.store.global_versions(i.swarm_id),
                    "epoch": self._epoch,
                    "ctx": {
                        "swarm_id": i.swarm_id,
                        "instance_id": i.instance_id,
                        "node_id": i.node_id,
                        "alias": i.alias,
                        "iteration": i.iteration,
                        "attempt": job.attempt,
                    },
                },
            )

    def poll(self, timeout: float | None) -> None:
        """Serve the workers' requests and reports for up to ``timeout`` seconds."""
        if self._grouped:
            self._place()
        for w in list(self._workers):
            if w.ready:
                self._assign(w)
        if not self._owner and all(w.ready for w in self._workers):
            return
        self._coalesce()
        for key, _ in self._sel.select(timeout):
            w = key.data
            if w not in self._workers:
                continue  # retired earlier in this round
            try:
                n = w.sock.recv_into(self._rbuf)
            except ConnectionError:
                n = 0
            if n == 0:
                self._crashed(w)
                continue
            for frame in w.reader.feed(self._rview[:n]):
                self._frame(w, frame)
                if w not in self._workers:
                    break
            else:
                if w.reader.broken is not None:  # task code can reach the channel's fd
                    self._crashed(
                        w,
                        f"the worker running it broke its channel to the driver "
                        f"({w.reader.broken.message}); task code must not write to the "
                        "worker's file descriptors",
                    )

    def _coalesce(self) -> None:
        """Let several instances end before the next wake-up, while every worker has
        plenty queued: one wake-up then handles several of them, and the driver's core
        goes to the workers meanwhile. Only short instances queue this deep, and the
        pause is a quarter of the least-fed worker's queued work, so none runs dry."""
        if not self._queue or not self._workers:
            return
        least = min(len(w.jobs) for w in self._workers)
        if least >= 4 and 2 * least >= self._depth:
            time.sleep(min(0.001, least * self._mean_s / 4))

    def _start_head(self, w: _Worker) -> None:
        w.head_since = time.monotonic()
        self._on_started(w.jobs[0].info.instance_id)

    def _timed(self, seconds: float) -> None:
        """Fold one instance's time into the running mean and set the depth from it."""
        self._mean_s = seconds if not self._mean_s else 0.9 * self._mean_s + 0.1 * seconds
        self._depth = max(2, min(self._max_depth, int(self._ahead_s / max(self._mean_s, 1e-6))))

    def _crashed(self, w: _Worker, error: str | None = None) -> None:
        """Replace a worker that died (or whose channel broke: ``error`` says how); the
        instance it was running fails as a crash, and its other jobs run elsewhere."""
        jobs = list(w.jobs)
        if error is None:  # its socket closed: let it exit (a sandbox passes on its status)
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=CRASH_EXIT_S)
        self._replace(w, jobs[1:])
        if jobs:
            if error is None:
                error = f"the worker process died ({self._death(w)}) while running it"
            self._on_done(jobs[0].info.instance_id, Outcome(False, error), "crash")

    def _death(self, w: _Worker) -> str:
        """How a worker whose channel closed ended, in words."""
        rc = w.proc.returncode
        return f"signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"

    def _frame(self, w: _Worker, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "ready":
            w.ready = True
            self._spawn_s = 0.5 * self._spawn_s + 0.5 * (time.monotonic() - w.spawned)
            self._assign(w)
            return
        if not w.jobs:
            return
        job = w.jobs[0]
        iid = job.info.instance_id
        if op == "done":
            w.jobs.popleft()
            self._owner.pop(iid, None)
            self._timed(time.monotonic() - w.head_since)
            outcome = Outcome(bool(frame["ok"]), frame.get("error", ""), frame.get("traceback", ""))
            late = self._notify_errors.pop(iid, None)
            if outcome.ok and late is not None:
                outcome = Outcome(False, late)
            if self._sandbox is not None and not outcome.ok:
                outcome = self._sandbox.explain(outcome)
            self._on_done(iid, outcome, "error")
            if w.waiting and w in self._workers:
                self._stop_waiting(w)
            if w in self._workers:
                if w.jobs:
                    self._start_head(w)
                self._assign(w)
                if self._grouped and not w.jobs:
                    self._place()
            return
        rid = frame.get("id")
        if frame["op"] == ops.INVOKE_CALL.name and not w.waiting:
            self._start_waiting(w)
        try:
            result = self._service.handle(job.info, frame["op"], frame.get("args") or {})
        except Exception as e:  # the task's request failed: the task sees the error
            if rid is not None:
                protocol.send(w.sock, {"id": rid, "error": protocol.error_payload(e)})
            else:
                self._notify_errors.setdefault(iid, f"{frame['op']} failed: {e}")
            return
        if frame["op"] == ops.GLOBALS_SET.name:  # before the reply: the write precedes it
            self._globals_changed(job.info.swarm_id)
        if rid is not None:
            protocol.send(w.sock, {"id": rid, "ok": result})

    def _globals_changed(self, swarm_id: str) -> None:
        """Tell every worker the new versions: jobs already sent to it carry older ones,
        and one that starts after this write must read the new value."""
        self._epoch += 1
        update = {
            "op": "versions",
            "epoch": self._epoch,
            "globals": self._service.store.global_versions(swarm_id),
        }
        for w in self._workers:
            with contextlib.suppress(OSError):  # a dead worker is noticed by the next poll
                protocol.send(w.sock, update)

    def close(self) -> None:
        """Ask every worker to exit, then kill what is left."""
        for w in list(self._workers):
            if w.proc.poll() is None:
                with contextlib.suppress(OSError):
                    protocol.send(w.sock, {"op": "exit"})
        for w in list(self._workers):
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=5)
            self._retire(w)
        self._sel.close()
        if self._sandbox is not None:
            self._sandbox.close()


def _worker_env() -> dict[str, str]:
    # A worker allocates and frees model-sized buffers for every instance. glibc's
    # defaults hand each one back to the kernel (munmap / heap trim), so the next
    # instance page-faults it in again: most of a small task's cost. Keeping freed
    # memory in the process removes that churn. The user's own settings win.
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024 * 1024))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(256 * 1024 * 1024))
    env.setdefault("MALLOC_TOP_PAD_", str(16 * 1024 * 1024))
    return env
