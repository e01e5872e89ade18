"""The node-level executor interface: how a node runs one task instance.

An executor starts ``<image python> -m shoal._node.task_runner SOCKET`` in some form of
isolation (its :class:`~shoal._exec.restrictions.Restrictions`) and hands it its
per-instance token on stdin (never in argv or the environment, which other processes
can read). The agent serves the socket and kills the instance on cancel; the handle
kills it past its wall-clock limit. Every handle is a :class:`ProcessHandle`: the
shared poll / wait / kill of one child process in its own session, the wall-clock
watchdog, and the limits its exit status shows; a sandbox's handle adds only what
differs (its cgroup, its container).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shoal._exec.restrictions import Restrictions

log = logging.getLogger("shoal.node")

TASK_RUNNER = "shoal._node.task_runner"


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
        The instance's own folder of the large values the agent fetched for it (links
        into the node's cache; read-only for the task). Never the whole cache, which
        holds other swarms' values.
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
    wall_s
        Wall-clock seconds after which the handle kills the instance (None: none).
    devices
        Device files the task is shown at ``/dev/<name>`` (a GPU task's ``/dev/nvidia*``).
    network
        The container network the instance shares with the other instances of its
        swarm on the same ``Task(network=...)`` (:func:`container_network`), or None.
        Only the OCI executors use it.
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
    wall_s: float | None = None
    devices: tuple[Path, ...] = ()
    network: str | None = None

    def restrictions(self, preset: Restrictions, sockets: Sequence[Path] = ()) -> Restrictions:
        """``preset`` applied to this instance.

        Parameters
        ----------
        preset
            The executor's policy (e.g. ``Restrictions.SANDBOX``).
        sockets
            Sockets the task must reach (shown writable).

        Returns
        -------
        Restrictions
            The preset with this instance's limits (a limit the spec leaves unset keeps
            the preset's) and, read-only, its bundle, blob cache and datasets.
        """

        def pick(mine: float | None, theirs: float | None) -> float | None:
            return theirs if mine is None else mine

        return dataclasses.replace(
            preset.with_binds(
                ro=[self.bundle_dir, self.blob_cache, *self.datasets.values()], rw=sockets
            ),
            memory_mb=self.memory_mb if self.memory_mb is not None else preset.memory_mb,
            max_processes=(
                self.max_processes if self.max_processes is not None else preset.max_processes
            ),
            cpus=pick(self.cpus, preset.cpus),
            cpu_s=self.cpu_seconds if self.cpu_seconds is not None else preset.cpu_s,
            wall_s=pick(self.wall_s, preset.wall_s),
            devices=(*preset.devices, *self.devices),
        )


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
    """Starts instances.

    Attributes
    ----------
    name
        Its name in node configs.
    enforces
        The restrictions it enforces (field names of :class:`Restrictions`); any other
        restriction a spec asks for is not applied.
    """

    name: str
    enforces: frozenset[str]

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the task runner of one instance connected to ``socket_path``."""
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


def runner_argv(interpreter: str | Path, socket_path: Path, limits: Restrictions) -> list[str]:
    """The task runner's command line: the limits it sets on itself before any task
    code runs are ``limits.memory_mb`` (an address-space rlimit) and ``limits.cpu_s``
    (RLIMIT_CPU)."""
    argv = [str(interpreter), "-m", TASK_RUNNER, str(socket_path)]
    if limits.memory_mb is not None:
        argv += ["--memory-mb", str(limits.memory_mb)]
    if limits.cpu_s is not None:
        argv += ["--cpu-seconds", str(limits.cpu_s)]
    return argv


class ProcessHandle:
    """A task process in its own session (so a kill reaches its children too).

    The base of every node-level handle. It polls, waits for and kills the process,
    kills it once ``limits.wall_s`` have passed (a watchdog thread), and names the limit
    that stopped it (:meth:`failure_reason`). Subclasses add what differs through two
    hooks: :meth:`_kill_more` (what else a kill must reach: a cgroup, a container) and
    :meth:`_exited` (called once after the process has exited: read counters, remove
    what the instance used).

    Parameters
    ----------
    proc
        The started process (the leader of its own session).
    limits
        The restrictions it runs under (``cpu_s`` and ``wall_s`` name a kill).
    """

    def __init__(self, proc: subprocess.Popen[bytes], limits: Restrictions) -> None:
        self.proc = proc
        self.limits = limits
        self.killed = False  # by kill(): the owner's decision, not a limit's
        self.expired = False  # by the wall-clock watchdog
        self._exit_lock = threading.Lock()
        self._exit_seen = False
        self._watchdog: threading.Timer | None = None
        if limits.wall_s is not None:
            self._watchdog = threading.Timer(limits.wall_s, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()

    @property
    def cpu_seconds(self) -> int | None:
        """The CPU-time limit it runs under (None: none)."""
        return self.limits.cpu_s

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        rc = self.proc.poll()
        if rc is not None:
            self._exit()
        return rc

    def wait(self, timeout: float | None) -> int | None:
        """Wait up to ``timeout`` s for it to exit."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._exit()
        return rc

    def kill(self) -> None:
        """Kill its process group and whatever else the instance holds, and reap it."""
        self.killed = True
        self._kill()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._kill_more()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self._exit()

    def _expire(self) -> None:
        if self.proc.poll() is None:
            self.expired = True
            log.info("pid %d ran past its wall-clock limit", self.proc.pid)
            self._kill()

    def _exit(self) -> None:
        with self._exit_lock:
            if self._exit_seen:
                return
            self._exit_seen = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._exited()

    def _kill_more(self) -> None:
        """What else a kill must reach (subclasses)."""

    def _exited(self) -> None:
        """Once, after the process has exited (subclasses)."""

    def failure_reason(self) -> str | None:
        """The limit that stopped it: the wall-clock or the CPU-time limit."""
        if self.expired:
            return f"wall-clock limit of {self.limits.wall_s:g} s exceeded (killed)"
        return signal_reason(self.proc.poll(), self.limits.cpu_s)


def container_network(swarm_id: str, network: str) -> str:
    """The node-local container network of ``network`` in swarm ``swarm_id``."""
    key = hashlib.sha256(f"{swarm_id}\x1f{network}".encode()).hexdigest()[:16]
    return f"shoal-net-{key}"
