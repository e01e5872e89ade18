"""How the simulator runs instances: inline (one process, debuggable) or a process pool,
whose workers may each run under bubblewrap (``executor="bwrap"``).

All take jobs, serve each running instance's world requests through the WorldService,
and report how each instance ended through callbacks. Cancelling a job that runs in a
pool worker kills that worker and starts a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shoal._engine.messages import FailureKind
from shoal._errors import ShoalError
from shoal._runtime import ops, protocol
from shoal._runtime.context import InstanceContext
from shoal._runtime.loader import ModuleCache, Outcome, run_instance
from shoal._world.direct import DirectChannel
from shoal._world.service import InstanceInfo, NodeInfo, WorldService

# The names ``executor=`` takes. "processes" is the pool's first name, kept as an alias.
EXECUTORS = ("process", "bwrap", "inline")
_ALIASES = {"processes": "process"}


@dataclass(frozen=True)
class Job:
    """One instance to run."""

    info: InstanceInfo
    attempt: int
    module: str
    folder: Path


OnDone = Callable[[str, Outcome, FailureKind], None]
OnStarted = Callable[[str], None]


class SimExecutor(Protocol):
    """What the simulator driver needs from an executor."""

    def submit(self, job: Job) -> None:
        """Queue a job."""
        ...

    def cancel(self, instance_id: str) -> None:
        """Drop a queued job or stop a running one; no completion is reported for it."""
        ...

    def poll(self, timeout: float | None) -> None:
        """Make progress for up to ``timeout`` seconds, reporting through callbacks."""
        ...

    def busy(self) -> bool:
        """Whether any job is queued or running."""
        ...

    def close(self) -> None:
        """Stop every worker."""
        ...


Fault = Callable[[InstanceInfo, int], "str | None"]  # -> None | "raise" | "crash" | "hang"


class InlineExecutor:
    """Runs every instance in this process, one after another (breakpoints work).

    ``fault`` (used by ``shoal.testing``) may make an instance raise, crash, or hang
    until it is cancelled, instead of running its code.
    """

    def __init__(
        self,
        service: WorldService,
        on_started: OnStarted,
        on_done: OnDone,
        fault: Fault | None = None,
    ) -> None:
        self._service = service
        self._on_started = on_started
        self._on_done = on_done
        self._fault = fault
        self._queue: deque[Job] = deque()
        self._cancelled: set[str] = set()
        self._hung: set[str] = set()
        self._cache = ModuleCache()

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def cancel(self, instance_id: str) -> None:
        if instance_id in self._hung:
            self._hung.discard(instance_id)
        else:
            self._cancelled.add(instance_id)

    def busy(self) -> bool:
        # A hung instance makes no progress by itself: only a timeout or a cancel ends it.
        return any(j.info.instance_id not in self._cancelled for j in self._queue)

    def poll(self, timeout: float | None) -> None:
        while self._queue:
            job = self._queue.popleft()
            if job.info.instance_id in self._cancelled:
                self._cancelled.discard(job.info.instance_id)
                continue
            info = job.info
            fault = self._fault(info, job.attempt) if self._fault else None
            if fault is not None:
                self._on_started(info.instance_id)
                if fault == "hang":
                    self._hung.add(info.instance_id)
                    return
                kind = FailureKind.CRASH if fault == "crash" else FailureKind.ERROR
                self._on_done(
                    info.instance_id, Outcome(False, f"injected fault: {fault}", ""), kind
                )
                return
            ctx = InstanceContext(
                info.swarm_id,
                info.instance_id,
                info.node_id,
                info.alias,
                info.iteration,
                job.attempt,
                DirectChannel(self._service, info),
            )
            self._on_started(info.instance_id)
            outcome = run_instance(self._cache, job.module, job.folder, ctx, capture=False)
            self._on_done(info.instance_id, outcome, FailureKind.ERROR)
            return

    def close(self) -> None:
        self._queue.clear()


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    reader: protocol.FrameReader
    # Jobs sent to this worker, in order: the first one is running (or about to), the
    # rest wait in its socket so it never idles while the driver handles a result.
    jobs: deque[Job] = field(default_factory=deque)
    ready: bool = False
    head_since: float = 0.0  # when the first of ``jobs`` started


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

    With ``sandbox`` every worker runs under bubblewrap (see :class:`BwrapSandbox`);
    without it (the default) workers are plain child processes.
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
        # Errors of one-way requests (results.add) fail the instance when it reports done.
        self._notify_errors: dict[str, str] = {}
        self._queue: deque[Job] = deque()
        self._cancelled: set[str] = set()
        self._sel = selectors.DefaultSelector()
        self._workers: list[_Worker] = []
        self._owner: dict[str, _Worker] = {}  # instance id -> the worker holding it
        # One receive buffer for every read: recv(n) would allocate n bytes each time.
        self._rbuf = bytearray(1 << 20)
        self._rview = memoryview(self._rbuf)
        for _ in range(workers):
            self._spawn()

    # ----------------------------------------------------------------- workers
    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "shoal._sim.worker", str(theirs.fileno()), str(self._blobs)]
        env = _worker_env()
        if self._sandbox is not None:  # the socket is an inherited fd: it crosses bwrap
            argv, env = self._sandbox.wrap(argv, env)
        proc = subprocess.Popen(
            argv,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        w = _Worker(proc, ours, protocol.FrameReader())
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
        self._queue.extendleft(reversed(requeue))
        self._spawn()

    # ---------------------------------------------------------------- interface
    def submit(self, job: Job) -> None:
        self._queue.append(job)
        # A worker with room starts at once: queueing an iteration's 1000 jobs takes the
        # driver ~3 ms, which the workers would otherwise spend idle.
        for w in self._workers:
            if w.ready and len(w.jobs) < self._depth:
                self._assign(w)

    def cancel(self, instance_id: str) -> None:
        self._notify_errors.pop(instance_id, None)
        w = self._owner.get(instance_id)
        if w is None:
            self._cancelled.add(instance_id)  # still in our queue: skipped when reached
            return
        others = [j for j in w.jobs if j.info.instance_id != instance_id]
        self._replace(w, others)

    def busy(self) -> bool:
        return bool(self._owner) or any(
            j.info.instance_id not in self._cancelled for j in self._queue
        )

    def _assign(self, w: _Worker) -> None:
        while self._queue and len(w.jobs) < self._depth:
            job = self._queue.popleft()
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
        self._replace(w, jobs[1:])
        if jobs:
            if error is None:
                rc = w.proc.returncode
                why = f"signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
                error = f"the worker process died ({why}) while running it"
            self._on_done(jobs[0].info.instance_id, Outcome(False, error), FailureKind.CRASH)

    def _frame(self, w: _Worker, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "ready":
            w.ready = True
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
            self._on_done(iid, outcome, FailureKind.ERROR)
            if w in self._workers:
                if w.jobs:
                    self._start_head(w)
                self._assign(w)
            return
        rid = frame.get("id")
        try:
            result = self._service.handle(job.info, frame["op"], frame.get("args") or {})
        except Exception as e:  # the task's request failed: the task sees the error
            if rid is not None:
                protocol.send(w.sock, {"id": rid, "error": protocol.error_payload(e)})
            else:
                self._notify_errors.setdefault(iid, f"{frame['op']} failed: {e}")
            return
        if frame["op"] == ops.GLOBALS_SET.name:  # before the reply: the write then precedes it
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


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------ bubblewrap
MAX_DATASET_BINDS = 256  # past this many dataset paths, their folders are bound instead
# Variables a sandboxed worker keeps from the driver's environment (names or prefixes):
# thread counts and allocator tuning change speed, PYTHONPATH can be where shoal is.
_KEEP_ENV = re.compile(r"^(MALLOC_|OMP_|OPENBLAS_|MKL_|NUMEXPR_|PYTHONPATH$|PYTHONHASHSEED$)")
# Failures that are what the sandbox does to code that reaches outside it.
_SANDBOXED_ERRORS = re.compile(
    r"^(FileNotFoundError|PermissionError|ConnectionRefusedError|ConnectionError|OSError|"
    r"gaierror|socket\.gaierror)\b"
)
SANDBOX_NOTE = (
    " [executor 'bwrap': the task sees only the Python environment, its module, its "
    "datasets (read-only), a private /tmp and work dir, and has no network]"
)


def bwrap_problem() -> str | None:
    """None if bubblewrap can sandbox this Python here; otherwise why not, in words."""
    from shoal._node.sandbox.bwrap import bwrap_binary
    from shoal._node.sandbox.probe import probe_bwrap

    if bwrap_binary() is None:
        return "bubblewrap is not installed"
    return probe_bwrap()


def check_bwrap() -> None:
    """Raise unless ``executor="bwrap"`` can work on this machine.

    Raises
    ------
    ShoalError
        ``sim.bwrap`` naming what is missing and the fix.
    """
    problem = bwrap_problem()
    if problem is not None:
        raise ShoalError(
            f"executor 'bwrap' cannot run here: {problem}",
            code="sim.bwrap",
            hint="install bubblewrap (apt-get install bubblewrap; it needs Linux), or use "
            "--executor process",
        )


def normalize_executor(name: str) -> str:
    """The canonical name of a simulator executor (``processes`` -> ``process``).

    Raises
    ------
    ShoalError
        ``sim.executor`` for an unknown name.
    """
    canonical = _ALIASES.get(name, name)
    if canonical not in EXECUTORS:
        raise ShoalError(
            f"unknown executor {name!r}",
            code="sim.executor",
            hint="use 'process' (a pool of workers), 'bwrap' (the pool under bubblewrap) "
            "or 'inline'",
        )
    return canonical


def _dataset_binds(paths: Iterable[Path], data_dir: Path) -> list[Path]:
    """The folders and files to bind for the nodes' datasets, as few as makes sense:
    the simulator's own partition folder once, every other path itself (their folders
    when there are very many)."""
    data_dir = data_dir.resolve()
    found: set[Path] = set()
    for p in paths:
        p = p.resolve()
        found.add(data_dir if p == data_dir or data_dir in p.parents else p)
    if len(found) > MAX_DATASET_BINDS:
        found = {p if p == data_dir else p.parent for p in found}
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


@dataclass
class BwrapSandbox:
    """How each simulator worker runs under bubblewrap.

    A worker sees the system directories and this Python's environment read-only, the
    swarm's extracted modules and every node's datasets read-only, the run's blob
    folder read-write (where values are exchanged), a private work dir (its HOME and
    working directory) and a private ``/tmp``. It has its own PID and network
    namespaces (loopback only: nothing outside is reachable), no capabilities, a
    scrubbed environment, and dies with the driver. Its channel to the driver is an
    inherited socket file descriptor, which crosses the sandbox.

    Attributes
    ----------
    bwrap
        The bwrap executable.
    ro_binds
        Read-only paths (interpreter, modules, datasets).
    rw_binds
        Read-write paths (the blob folder).
    work_root
        Holds one private work dir per worker; removed by :meth:`close`.
    """

    bwrap: str
    ro_binds: tuple[Path, ...]
    rw_binds: tuple[Path, ...]
    work_root: Path
    _spawned: int = 0

    @classmethod
    def for_run(cls, run_dir: Path, nodes: Iterable[NodeInfo]) -> BwrapSandbox:
        """The sandbox of a simulation in ``run_dir`` over ``nodes``.

        Raises
        ------
        ShoalError
            ``sim.bwrap`` if bubblewrap is missing or does not work here.
        """
        from shoal._node.sandbox.bwrap import bwrap_binary, interpreter_binds

        if not run_dir.is_absolute():  # job folders and blob paths must mean the same inside
            raise ShoalError(
                f"run_dir {run_dir} is relative",
                code="sim.bwrap",
                hint="pass an absolute run_dir with executor 'bwrap'",
            )
        check_bwrap()
        binary = bwrap_binary()
        assert binary is not None  # check_bwrap() passed
        pythonpath = os.environ.get("PYTHONPATH") or None
        ro = [*interpreter_binds(Path(sys.executable), pythonpath), run_dir / "modules"]
        datasets = (p for n in nodes for p in n.datasets.values())
        ro += _dataset_binds(datasets, run_dir / "data")
        return cls(
            bwrap=binary,
            ro_binds=tuple(ro),
            rw_binds=(run_dir / "blobs",),
            work_root=Path(tempfile.mkdtemp(prefix="shoal-sim-bwrap-")),
        )

    def wrap(self, argv: list[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """The bwrap command line and bwrap's own environment for one worker.

        Parameters
        ----------
        argv
            The worker's command line.
        env
            The environment the worker would have unsandboxed; it keeps only thread
            counts, allocator tuning, PYTHONPATH and PYTHONHASHSEED.

        Returns
        -------
        tuple of (list of str, dict)
            The command line and a minimal environment for bwrap itself.
        """
        from shoal._node.sandbox.bwrap import DEFAULT_PATH, bwrap_argv

        self._spawned += 1
        workdir = self.work_root / f"w{self._spawned}"
        workdir.mkdir(parents=True)
        inner = {
            "PATH": DEFAULT_PATH,
            "HOME": str(workdir),
            "TMPDIR": "/tmp",
            "LANG": env.get("LANG", "C.UTF-8"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        inner.update({k: v for k, v in env.items() if _KEEP_ENV.match(k)})
        wrapped = bwrap_argv(
            argv, ro_binds=self.ro_binds, rw_binds=self.rw_binds, workdir=workdir, env=inner
        )
        wrapped[0] = self.bwrap
        outer = {"PATH": env.get("PATH", DEFAULT_PATH), "LANG": inner["LANG"]}
        return wrapped, outer

    def explain(self, outcome: Outcome) -> Outcome:
        """Say that the sandbox is why, when a task failed reaching outside it."""
        if _SANDBOXED_ERRORS.match(outcome.error) and SANDBOX_NOTE not in outcome.error:
            return Outcome(False, outcome.error + SANDBOX_NOTE, outcome.traceback)
        return outcome

    def close(self) -> None:
        """Remove the workers' work dirs."""
        shutil.rmtree(self.work_root, ignore_errors=True)
