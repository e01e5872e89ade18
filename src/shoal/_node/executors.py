"""How a node runs one task instance: the Executor interface and its registry.

An executor starts ``<image python> -m shoal._node.task_runner SOCKET`` in some form of
isolation and hands it its per-instance token on stdin (never in argv or the
environment, which other processes can read). The agent serves the socket, enforces the
wall-clock timeout and kills the instance on cancel. Executors are registered by name
(:func:`register_executor`); the agent only knows the interface:

- ``process`` (alias ``subprocess``): a plain child process with rlimits; no isolation;
- ``bwrap``: bubblewrap with cgroup limits (:mod:`shoal._node.sandbox.bwrap`);
- ``podman``, ``docker``: a container of the module's OCI image
  (:mod:`shoal._node.sandbox.oci`);
- ``auto`` (the default): ``bwrap`` on Linux when it works here, otherwise ``process``
  with a warning that says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
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
    max_processes
        Processes and threads at once (None: none); only a sandboxing executor with a
        pids cgroup can enforce it.
    cpus
        CPU quota in cores (None: none); needs a cpu cgroup.
    image
        The image name the module asked for (OCI executors run the image they
        checked under that name; the others use ``interpreter``).
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
    max_processes: int | None = None
    cpus: float | None = None
    image: str = "python"


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


def failure_reason(handle: TaskHandle) -> str | None:
    """Which limit stopped the instance, if its handle can tell (after it exited).

    A handle may define ``failure_reason() -> str | None`` (e.g. "memory limit of
    256 MB exceeded (killed by the cgroup OOM killer)"); handles without it tell
    nothing. Never raises.
    """
    explain = getattr(handle, "failure_reason", None)
    if explain is None:
        return None
    try:
        reason = explain()
    except Exception:  # an explanation must never cost the report
        log.exception("failure_reason() of %r failed", handle)
        return None
    return str(reason) if reason else None


def signal_reason(rc: int | None, cpu_seconds: int | None) -> str | None:
    """The limit a task process's exit status shows (SIGXCPU: the CPU time limit),
    whether the signal came directly (``-24``) or through a shell or bwrap (``152``)."""
    if cpu_seconds is not None and rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return f"CPU time limit of {cpu_seconds} s exceeded (SIGXCPU)"
    return None


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


def spawn_with_token(
    argv: list[str], token: str, workdir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session in ``workdir`` (output to ``runner.log``) and
    hand it the per-instance ``token`` on stdin, never in argv or the environment, which
    other processes can read. ``OSError`` if it cannot be started."""
    with (workdir / "runner.log").open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    assert proc.stdin is not None
    try:
        proc.stdin.write(token.encode() + b"\n")
        proc.stdin.close()
    except OSError:  # it died at once; the agent reports the crash
        pass
    return proc


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

    def __init__(self, proc: subprocess.Popen[bytes], cpu_seconds: int | None = None) -> None:
        self.proc = proc
        self.cpu_seconds = cpu_seconds

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

    def failure_reason(self) -> str | None:
        """The limit that stopped it (only the CPU time limit can be told apart)."""
        return signal_reason(self.proc.poll(), self.cpu_seconds)


class SubprocessExecutor:
    """Runs each instance as a plain child process.

    Limits: an address-space limit (``memory_mb``) and CPU seconds (``cpu_seconds``),
    set by the task runner on itself before any task code runs; a scrubbed environment;
    a private work dir. It does NOT isolate: task code can read what the agent's user
    can read, reach the network and fork without bound. Use it only for trusted code.
    """

    name = "process"

    def __init__(self) -> None:
        log.warning(
            "executor 'process' does not isolate task code: it can read this user's "
            "files, reach the network and start processes without bound; use the "
            "'bwrap' executor for untrusted code"
        )

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the task runner and hand it its token on stdin."""
        (spec.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        argv = runner_argv(spec, socket_path)
        proc = spawn_with_token(argv, token, spec.workdir, task_env(spec))
        return ProcessHandle(proc, spec.cpu_seconds)


ExecutorFactory = Callable[[], Executor]


def _bwrap() -> Executor:
    from shoal._node.sandbox.bwrap import BwrapExecutor

    return BwrapExecutor()


def _auto() -> Executor:
    """``bwrap`` when it works on this machine, else ``process`` with a warning."""
    if not sys.platform.startswith("linux"):
        why = f"bubblewrap needs Linux (this is {sys.platform})"
    else:
        from shoal._node.sandbox.probe import probe_bwrap

        why = probe_bwrap()
        if why is None:
            return _bwrap()
    log.warning(
        "executor 'auto': falling back to 'process', which does NOT isolate task code, because %s",
        why,
    )
    return SubprocessExecutor()


def _oci(engine: str) -> ExecutorFactory:
    """A container engine's executor (:mod:`shoal._node.sandbox.oci`), imported on use."""

    def make() -> Executor:
        from shoal._node.sandbox.oci import OciExecutor

        return OciExecutor(engine)

    return make


_EXECUTORS: dict[str, ExecutorFactory] = {
    "auto": _auto,
    "bwrap": _bwrap,
    "process": SubprocessExecutor,
    "subprocess": SubprocessExecutor,  # the name before 'process'; old configs use it
    "podman": _oci("podman"),
    "docker": _oci("docker"),
}


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
