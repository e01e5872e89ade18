"""How a node runs one task instance: the Executor interface and its registry.

An executor starts ``<image python> -m shoal._node.task_runner SOCKET`` in some form of
isolation and hands it its per-instance token on stdin (never in argv or the
environment, which other processes can read). The agent serves the socket, enforces the
wall-clock timeout and kills the instance on cancel. Sandboxing executors (bubblewrap,
OCI) register themselves under their names with :func:`register_executor`; the agent
only knows the interface.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shoal._errors import ShoalError

log = logging.getLogger("shoal.node")


@dataclass(frozen=True)
class InstanceSpec:
    """What an executor needs to start one instance.

    Attributes
    ----------
    instance_id
        The instance (for messages only).
    interpreter
        The image's Python interpreter.
    pythonpath
        A PYTHONPATH that makes ``shoal`` importable by ``interpreter``, or None.
    workdir
        The instance's private writable folder (its HOME and TMPDIR).
    bundle_dir
        The extracted module bundle (read-only for the task).
    datasets
        The datasets the task may read (name -> path).
    blob_cache
        Large values the agent fetched for the task (read-only for the task).
    memory_mb, cpu_seconds
        Limits (None: none).
    """

    instance_id: str
    interpreter: Path
    pythonpath: str | None
    workdir: Path
    bundle_dir: Path
    datasets: dict[str, Path]
    blob_cache: Path
    memory_mb: int | None = None
    cpu_seconds: int | None = None


class TaskHandle(Protocol):
    """A started instance process."""

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        ...

    def wait(self, timeout: float | None) -> int | None:
        """Wait up to ``timeout`` s for it to exit; its status, or None if it still runs."""
        ...

    def kill(self) -> None:
        """Kill it and everything it started."""
        ...


class Executor(Protocol):
    """Starts instances."""

    name: str

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the task runner of one instance connected to ``socket_path``."""
        ...


def task_env(spec: InstanceSpec) -> dict[str, str]:
    """The whole environment of a task: nothing of the agent's (no credential, no join
    token, no cloud keys), only what an interpreter needs."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(spec.workdir),
        "TMPDIR": str(spec.workdir / "tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if spec.pythonpath:
        env["PYTHONPATH"] = spec.pythonpath
    return env


def runner_argv(spec: InstanceSpec, socket_path: Path) -> list[str]:
    """The task runner's command line."""
    argv = [str(spec.interpreter), "-m", "shoal._node.task_runner", str(socket_path)]
    if spec.memory_mb is not None:
        argv += ["--memory-mb", str(spec.memory_mb)]
    if spec.cpu_seconds is not None:
        argv += ["--cpu-seconds", str(spec.cpu_seconds)]
    return argv


class ProcessHandle:
    """A task process in its own session (so a kill reaches its children too)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        return self.proc.poll()

    def wait(self, timeout: float | None) -> int | None:
        """Wait up to ``timeout`` s for it to exit."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL its process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)


class SubprocessExecutor:
    """Runs each instance as a plain child process.

    Limits: an address-space limit (``memory_mb``) and CPU seconds (``cpu_seconds``),
    set by the task runner on itself before any task code runs; a scrubbed environment;
    a private work dir. It does NOT isolate: task code can read what the agent's user
    can read and reach the network. Use it only for trusted code.
    """

    name = "subprocess"

    def __init__(self) -> None:
        log.warning(
            "executor 'subprocess' does not isolate task code: it can read this user's "
            "files and reach the network; use a sandboxing executor for untrusted code"
        )

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the task runner and hand it its token on stdin."""
        (spec.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        out = (spec.workdir / "runner.log").open("wb")
        try:
            proc = subprocess.Popen(
                runner_argv(spec, socket_path),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=spec.workdir,
                env=task_env(spec),
                start_new_session=True,
                close_fds=True,
            )
        finally:
            out.close()
        assert proc.stdin is not None
        try:
            proc.stdin.write(token.encode() + b"\n")
            proc.stdin.close()
        except OSError:  # it died at once; the agent reports the crash
            pass
        return ProcessHandle(proc)


ExecutorFactory = Callable[[], Executor]

_EXECUTORS: dict[str, ExecutorFactory] = {"subprocess": SubprocessExecutor}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    """Make an executor available to node configs as ``executor = "<name>"``."""
    _EXECUTORS[name] = factory


def make_executor(name: str) -> Executor:
    """The executor registered under ``name``.

    Raises
    ------
    ShoalError
        ``node.executor`` naming the registered executors.
    """
    factory = _EXECUTORS.get(name)
    if factory is None:
        raise ShoalError(
            f"unknown executor {name!r}",
            code="node.executor",
            hint=f"set executor to one of {sorted(_EXECUTORS)} in the node config",
        )
    return factory()
