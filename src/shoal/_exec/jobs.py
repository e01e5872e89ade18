"""The pool-level executor interface: how the simulator runs instances.

The simulator's driver hands an executor :class:`Job` values (one instance of any
virtual node each) and hears back through two callbacks: ``on_started(instance_id)``
when an instance starts and ``on_done(instance_id, outcome, kind)`` when it ends, where
``kind`` is ``"error"`` (the task raised) or ``"crash"`` (the process running it died).
The backends: :class:`~shoal._exec.inline.InlineExecutor` (this process),
:class:`~shoal._exec.pool.ProcessPoolExecutor` (a pool of worker processes), and the
same pool under bubblewrap (:class:`~shoal._exec.pool_bwrap.BwrapSandbox`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from shoal._errors import ShoalError
from shoal._runtime.loader import Outcome
from shoal._world.service import InstanceInfo

# The names ``executor=`` takes. "processes" is the pool's first name, kept as an alias.
EXECUTORS = ("process", "bwrap", "inline")
_ALIASES = {"processes": "process"}

#: How an instance failed, as the engine's ``FailureKind`` values name it.
Kind = Literal["error", "crash"]


@dataclass(frozen=True)
class Job:
    """One instance to run.

    Attributes
    ----------
    info
        The instance (its node, task, iteration and inputs).
    attempt
        Which attempt (0 first).
    module
        The module's digest.
    folder
        The module's extracted bundle.
    datasets
        The datasets its module declares: a sandboxed pool shows a worker only these.
    """

    info: InstanceInfo
    attempt: int
    module: str
    folder: Path
    datasets: frozenset[str] = frozenset()


OnDone = Callable[[str, Outcome, Kind], None]
OnStarted = Callable[[str], None]
Fault = Callable[[InstanceInfo, int], "str | None"]  # -> None | "raise" | "crash" | "hang"


class SimExecutor(Protocol):
    """What the simulator driver needs from an executor.

    Attributes
    ----------
    enforces
        The restrictions it enforces on task code (field names of
        :class:`~shoal._exec.restrictions.Restrictions`).
    """

    enforces: frozenset[str]

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


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
