"""The ``inline`` simulator executor: every instance in this process, one after another."""

from __future__ import annotations

from collections import deque

from shoal._exec.jobs import Fault, Job, OnDone, OnStarted
from shoal._runtime.context import InstanceContext
from shoal._runtime.loader import ModuleCache, Outcome, run_instance
from shoal._world.direct import DirectChannel
from shoal._world.service import WorldService


class InlineExecutor:
    """Runs every instance in this process, one after another (breakpoints work).

    It restricts nothing and enforces no timeout (a hung instance blocks the run) and
    does not capture prints. ``fault`` (used by ``shoal.testing``) may make an instance
    raise, crash, or hang until it is cancelled, instead of running its code.
    """

    enforces: frozenset[str] = frozenset()
    #: Task code runs in the driver's thread: a blocking world call (``world.invoke``)
    #: must turn the driver's loop itself.
    in_driver_thread = True

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
        """Queue a job."""
        self._queue.append(job)

    def cancel(self, instance_id: str) -> None:
        """Drop a queued job, or end a hung one."""
        if instance_id in self._hung:
            self._hung.discard(instance_id)
        else:
            self._cancelled.add(instance_id)

    def busy(self) -> bool:
        """Whether a job waits (a hung instance makes no progress by itself: only a
        timeout or a cancel ends it)."""
        return any(j.info.instance_id not in self._cancelled for j in self._queue)

    def poll(self, timeout: float | None) -> None:
        """Run the next job to its end."""
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
                self._on_done(
                    info.instance_id,
                    Outcome(False, f"injected fault: {fault}", ""),
                    "crash" if fault == "crash" else "error",
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
            self._on_done(info.instance_id, outcome, "error")
            return

    def close(self) -> None:
        """Drop what is queued."""
        self._queue.clear()
