"""The bubblewrap sandbox: the command line (:func:`bwrap_argv`) and what an
interpreter needs to see (:func:`interpreter_binds`).

Inside, a process sees a read-only view of the system directories (``/usr`` and the
merged-usr links, a few files of ``/etc``), the read-only paths it was given, its
writable work dir, a private ``/tmp``, a fresh ``/dev`` and ``/proc``; nothing else of
the host. It runs in new mount, PID, IPC, UTS, cgroup and (unless ``share_net``)
network namespaces, with no capabilities, in its own session, and dies with its parent.
Every path is bound at the same path as on the host, so paths handed to the task stay
valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from shoal._errors import ShoalError
from shoal._node.executors import (
    InstanceSpec,
    TaskHandle,
    runner_argv,
    signal_reason,
    spawn_with_token,
    task_env,
)
from shoal._node.sandbox.cgroups import Cgroup, CgroupLimits, Cgroups, Counters

log = logging.getLogger("shoal.node")

# Read-only system directories; a host symlink (merged /usr) becomes the same symlink.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a dynamically linked interpreter and TLS need; no secrets (no shadow,
# no ssh, no machine-id).
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def bwrap_binary() -> str | None:
    """The ``bwrap`` executable on PATH, or None."""
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def _system_view() -> tuple[str, ...]:
    """The bwrap arguments for the system directories, as this host lays them out."""
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ETC_FILES:
        args += ["--ro-bind-try", f, f]
    return tuple(args)


def _covered(path: Path, by: Sequence[Path]) -> bool:
    return any(path == p or p in path.parents for p in by)


def _is_system(path: Path) -> bool:
    return _covered(path, [Path(d) for d in SYSTEM_DIRS if not os.path.islink(d)])


def bwrap_argv(
    inner: list[str],
    *,
    ro_binds: Sequence[Path],
    rw_binds: Sequence[Path],
    workdir: Path,
    share_net: bool = False,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The bubblewrap command line that runs ``inner`` in a sandbox.

    Parameters
    ----------
    inner
        The command to run inside (its first word: an absolute path visible inside,
        e.g. an interpreter whose :func:`interpreter_binds` are in ``ro_binds``).
    ro_binds
        Host paths to show read-only, each at the same path (the interpreter's
        environment, the bundle, datasets, caches). Paths under ``/usr`` are already
        visible and skipped; a path inside another one is bound once.
    rw_binds
        Host paths to show writable at the same path (e.g. the node's socket).
    workdir
        The private writable folder, bound at its own path; the working directory and
        ``HOME``. ``/tmp`` is a fresh tmpfs (counted against the memory limit).
    share_net
        Keep the host's network; by default the sandbox has its own network namespace
        with only a loopback device, so nothing outside is reachable.
    env
        The whole environment inside (it is cleared first); by default only ``PATH``,
        ``HOME``, ``TMPDIR=/tmp`` and ``LANG``.

    Returns
    -------
    list[str]
        ``["bwrap", ...options, "--", *inner]``.

    Notes
    -----
    The result depends only on the arguments and on how the host lays out its system
    directories (``/bin`` as a symlink or a folder), which is read once.
    """
    argv = ["bwrap", *_system_view()]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    binds: dict[Path, str] = {}
    for p in map(Path, ro_binds):
        if not _is_system(p):
            binds.setdefault(p, "--ro-bind")
    for p in [*map(Path, rw_binds), Path(workdir)]:
        binds[p] = "--bind"
    # Parents before children (a later mount hides what is under it); a read-only
    # path inside another read-only one adds nothing.
    ordered = sorted(binds, key=lambda p: (len(p.parts), str(p)))
    ro_done: list[Path] = []
    for p in ordered:
        kind = binds[p]
        if kind == "--ro-bind":
            if _covered(p, ro_done):
                continue
            ro_done.append(p)
        argv += [kind, str(p), str(p)]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not share_net:
        argv += ["--unshare-net"]
    argv += ["--hostname", "sandbox", "--die-with-parent", "--new-session"]
    argv += ["--cap-drop", "ALL", "--chdir", str(workdir), "--clearenv"]
    environment = {
        "PATH": DEFAULT_PATH,
        "HOME": str(workdir),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
    }
    if env is not None:
        environment = dict(env)
    for key, value in environment.items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *inner]


_PROBE = """
import json, os, sys
paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
try:
    import shoal
    paths += [os.path.dirname(p) for p in shoal.__path__]
except Exception:
    pass
print(json.dumps(paths))
"""


@functools.lru_cache(maxsize=64)
def _interpreter_paths(interpreter: str, pythonpath: str | None) -> tuple[str, ...]:
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [interpreter, "-c", _PROBE],
        env=env,
        cwd="/",
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    paths: list[str] = json.loads(out)
    return tuple(paths)


def interpreter_binds(interpreter: Path, pythonpath: str | None) -> list[Path]:
    """What ``interpreter`` needs to see to start and import shoal, outside the system
    directories: its virtual environment and base installation, the entries of its
    ``sys.path`` (with ``pythonpath``), and where ``shoal`` is imported from.

    The interpreter is asked once (per interpreter and ``pythonpath``) and the answer
    is cached.

    Parameters
    ----------
    interpreter
        The image's Python (a virtual environment's ``bin/python`` or any other).
    pythonpath
        The PYTHONPATH the task will run with, or None.

    Returns
    -------
    list[Path]
        Existing absolute paths, outermost first, none inside another or under /usr.

    Raises
    ------
    OSError, subprocess.SubprocessError
        If the interpreter cannot be run.
    """
    named = [*_interpreter_paths(str(interpreter), pythonpath)]
    named += (pythonpath or "").split(os.pathsep)
    found = [Path(p) for p in named if os.path.isabs(p)]
    # The interpreter's own folder (a venv's bin/ holds only symlinks to it).
    found += [interpreter.parent, interpreter.resolve().parent]
    found += [Path(os.path.realpath(p)) for p in found]  # symlinked prefixes, too
    return _outermost([p for p in found if p.is_absolute() and p.exists() and not _is_system(p)])


def _outermost(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not _covered(p, out):
            out.append(p)
    return out


# Joins the cgroups named before "--" (its own pid into each cgroup.procs), then execs
# the rest: everything the sandbox starts is inside the limits from its first moment.
_JOIN = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || '
    '{ echo "shoal: cannot join the cgroup $1" >&2; exit 125; }; shift; done; '
    'shift; exec "$@"'
)


class BwrapHandle:
    """A sandboxed instance: the bwrap process and the cgroup it runs in.

    Once it has exited, the cgroup's counters are read (to tell which limit stopped
    it) and the cgroup is removed.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        cgroup: Cgroup | None,
        spec: InstanceSpec,
        log_path: Path,
    ) -> None:
        self.proc = proc
        self.cgroup = cgroup
        self.spec = spec
        self.log_path = log_path
        self.counters = Counters()
        self._released = False

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        rc = self.proc.poll()
        if rc is not None:
            self._release()
        return rc

    def wait(self, timeout: float | None) -> int | None:
        """Wait up to ``timeout`` s for it to exit."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._release()
        return rc

    def kill(self) -> None:
        """SIGKILL bwrap (its PID namespace dies with it) and whatever is in the cgroup."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.cgroup is not None:
            self.counters = self.cgroup.counters()
            self.cgroup.remove()

    def failure_reason(self) -> str | None:
        """Which limit stopped it, or why the sandbox did not start; None if neither."""
        spec, rc = self.spec, self.proc.poll()
        if self.counters.oom_kills:
            return f"memory limit of {spec.memory_mb} MB exceeded (killed by the cgroup OOM killer)"
        if self.counters.pids_refused:
            return (
                f"process limit of {spec.max_processes} reached "
                f"(forks refused by the pids cgroup: {self.counters.pids_refused})"
            )
        if (why := signal_reason(rc, spec.cpu_seconds)) is not None:
            return why
        if rc is not None and rc != 0:
            said = self._sandbox_error()
            if said:
                return f"the sandbox failed to start: {said}"
        return None

    def _sandbox_error(self) -> str | None:
        try:
            head = self.log_path.read_bytes()[:4000].decode(errors="replace")
        except OSError:
            return None
        for line in head.splitlines():
            if line.startswith(("bwrap: ", "shoal: cannot join")):
                return line.strip()
        return None


class BwrapExecutor:
    """Runs each instance in a bubblewrap sandbox (see the module docstring) with its
    limits in a cgroup of its own.

    Limits: ``memory_mb`` (RAM of all its processes, no swap: the OOM killer stops
    it), ``max_processes`` (processes and threads at once), ``cpus`` (a CPU quota)
    through cgroups when this machine lets the agent create them; ``cpu_seconds``
    through RLIMIT_CPU. Without a writable memory cgroup ``memory_mb`` falls back to an
    address-space rlimit; without a pids cgroup the number of processes is NOT bounded
    (RLIMIT_NPROC does not apply to root). Both fallbacks are logged.

    Raises
    ------
    ShoalError
        ``node.executor`` if bubblewrap is missing or does not work here.
    """

    name = "bwrap"

    def __init__(self) -> None:
        from shoal._node.sandbox.probe import probe_bwrap

        why = probe_bwrap()
        binary = bwrap_binary()
        if why is not None or binary is None:
            raise ShoalError(
                f"executor 'bwrap' cannot be used: {why}",
                code="node.executor",
                hint="install bubblewrap (apt-get install bubblewrap), or set "
                'executor = "process" (no isolation) in the node config',
            )
        self.binary = binary
        found = Cgroups.detect()
        self.cgroups: Cgroups | None = found if isinstance(found, Cgroups) else None
        if self.cgroups is None:
            log.warning(
                "executor 'bwrap': no usable cgroups (%s); memory falls back to an "
                "address-space rlimit, and the number of processes is NOT bounded "
                "(RLIMIT_NPROC does not bind root)",
                found,
            )
        else:
            missing = {"memory", "pids"} - self.cgroups.controllers
            log.info("executor 'bwrap': limits through %s", self.cgroups.describe())
            if missing:
                log.warning(
                    "executor 'bwrap': no %s cgroup controller: %s",
                    " or ".join(sorted(missing)),
                    "the number of processes is NOT bounded"
                    if "pids" in missing
                    else "memory falls back to an address-space rlimit",
                )

    def _cgroup(self, spec: InstanceSpec) -> Cgroup | None:
        if self.cgroups is None:
            return None
        limits = CgroupLimits(spec.memory_mb, spec.max_processes, spec.cpus)
        return self.cgroups.create(spec.workdir.name, limits)

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the task runner in the sandbox and hand it its token on stdin.

        Raises
        ------
        ShoalError
            ``node.sandbox`` if the sandbox cannot be set up (the instance fails with
            this reason; the agent carries on).
        """
        (spec.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        try:
            binds = interpreter_binds(spec.interpreter, spec.pythonpath)
            cgroup = self._cgroup(spec)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            raise ShoalError(
                f"the sandbox of {spec.instance_id} could not be set up: {e}",
                code="node.sandbox",
                hint="check the image's interpreter and the agent's cgroup permissions",
            ) from None
        inner_spec = spec
        if cgroup is not None and "memory" in cgroup.dirs:  # the cgroup bounds memory
            inner_spec = dataclasses.replace(spec, memory_mb=None)
        env = task_env(spec)
        env["PATH"] = f"{spec.interpreter.parent}:{DEFAULT_PATH}"
        argv = bwrap_argv(
            runner_argv(inner_spec, socket_path),
            ro_binds=[*binds, spec.bundle_dir, spec.blob_cache, *spec.datasets.values()],
            rw_binds=[socket_path],
            workdir=spec.workdir,
            env=env,
        )
        argv[0] = self.binary
        if cgroup is not None:
            joins = [str(p) for p in cgroup.procs_files]
            argv = ["/bin/sh", "-c", _JOIN, "sh", *joins, "--", *argv]
        log_path = spec.workdir / "runner.log"
        try:
            proc = spawn_with_token(
                argv, token, spec.workdir, {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
            )
        except OSError as e:
            if cgroup is not None:
                cgroup.remove()
            raise ShoalError(
                f"the sandbox of {spec.instance_id} could not be started: {e}",
                code="node.sandbox",
                hint="check that bubblewrap is installed",
            ) from None
        return BwrapHandle(proc, cgroup, spec, log_path)
