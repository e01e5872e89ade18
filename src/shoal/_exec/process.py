"""The ``process`` executor (old name ``subprocess``): a plain child process.

No isolation: use it for trusted code only (the ``TRUSTED`` preset).
"""

from __future__ import annotations

import logging
from pathlib import Path

from shoal._exec.base import (
    InstanceSpec,
    ProcessHandle,
    TaskHandle,
    runner_argv,
    spawn_with_token,
    task_env,
)
from shoal._exec.restrictions import Restrictions

log = logging.getLogger("shoal.node")


class SubprocessExecutor:
    """Runs each instance as a plain child process.

    Limits: an address-space limit (``memory_mb``) and CPU seconds (``cpu_s``), set by
    the task runner on itself before any task code runs; the wall-clock limit
    (``wall_s``, by the handle); a scrubbed environment; a private work dir. It does
    NOT isolate: task code can read what the agent's user can read, reach the network
    and fork without bound. Use it only for trusted code.
    """

    name = "process"
    preset = Restrictions.TRUSTED
    enforces: frozenset[str] = frozenset({"memory_mb", "cpu_s", "wall_s"})

    def __init__(self) -> None:
        log.warning(
            "executor 'process' does not isolate task code: it can read this user's "
            "files, reach the network and start processes without bound; use the "
            "'bwrap' executor for untrusted code"
        )

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the task runner and hand it its token on stdin."""
        (spec.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        limits = spec.restrictions(self.preset)
        argv = runner_argv(spec.interpreter, socket_path, limits)
        proc = spawn_with_token(argv, token, spec.workdir, task_env(spec))
        return ProcessHandle(proc, limits)
