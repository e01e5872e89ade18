"""The bubblewrap sandbox: the command line (:func:`bwrap_argv`), what an interpreter
needs to see (:func:`interpreter_binds`), and the node-level ``bwrap`` executor.

Inside, a process sees a read-only view of the system directories (``/usr`` and the
merged-usr links, a few files of ``/etc``), the read-only paths it was given, its
writable work dir, a private ``/tmp``, a fresh ``/dev`` and ``/proc``; nothing else of
the host. It runs in new mount, PID, IPC, UTS, cgroup and (unless its restrictions
allow the network) network namespaces, with no capabilities, in its own session, and
dies with its parent. Every path is bound at the same path as on the host, so paths
handed to the task stay valid. The simulator's bwrap pool (:mod:`shoal._exec.pool_bwrap`)
builds its workers' command lines with the same :func:`bwrap_argv`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from shoal._errors import ShoalError
from shoal._exec.base import (
    InstanceSpec,
    ProcessHandle,
    TaskHandle,
    runner_argv,
    spawn_with_token,
    task_env,
)
from shoal._exec.cgroups import Cgroup, CgroupLimits, Cgroups, Counters
from shoal._exec.restrictions import Restrictions

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
    limits: Restrictions,
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The bubblewrap command line that runs ``inner`` under ``limits``.

    Parameters
    ----------
    inner
        The command to run inside (its first word: an absolute path visible inside,
        e.g. an interpreter whose :func:`interpreter_binds` are in ``limits.ro_binds``).
    limits
        What the sandbox shows and allows. ``host_files`` must be False: the sandbox
        shows the system directories, then ``ro_binds`` read-only (the interpreter's
        environment, the bundle, datasets, caches; paths under ``/usr`` are already
        visible and skipped; a path inside another one is bound once) and ``rw_binds``
        writable (e.g. the node's socket), each at its own path. ``network=False``
        gives it a network namespace of its own with only a loopback device, so nothing
        outside is reachable. The other limits are not command-line flags of bwrap
        (cgroups, the task runner's rlimits and the handle enforce them).
    workdir
        The private writable folder, bound at its own path; the working directory and
        ``HOME``. ``/tmp`` is a fresh tmpfs (counted against the memory limit).
    env
        The whole environment inside (it is cleared first); by default only ``PATH``,
        ``HOME``, ``TMPDIR=/tmp`` and ``LANG``.

    Returns
    -------
    list[str]
        ``["bwrap", ...options, "--", *inner]``.

    Raises
    ------
    ValueError
        If ``limits.host_files`` is True (bubblewrap here always confines the files).

    Notes
    -----
    The result depends only on the arguments and on how the host lays out its system
    directories (``/bin`` as a symlink or a folder), which is read once.
    """
    if limits.host_files:
        raise ValueError("bwrap_argv shows only binds: pass restrictions with host_files=False")
    argv = ["bwrap", *_system_view()]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for device in limits.devices:  # a GPU task's /dev/nvidia*: after the fresh /dev
        argv += ["--dev-bind", str(device), f"/dev/{Path(device).name}"]
    binds: dict[Path, str] = {}
    for p in map(Path, limits.ro_binds):
        if not _is_system(p):
            binds.setdefault(p, "--ro-bind")
    for p in [*map(Path, limits.rw_binds), Path(workdir)]:
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
    if not limits.network:
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


class BwrapHandle(ProcessHandle):
    """A sandboxed instance: the bwrap process and the cgroup it runs in.

    Once it has exited, the cgroup's counters are read (to tell which limit stopped
    it) and the cgroup is removed; a kill also kills whatever is in the cgroup.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        cgroup: Cgroup | None,
        limits: Restrictions,
        log_path: Path,
    ) -> None:
        self.cgroup = cgroup
        self.log_path = log_path
        self.counters = Counters()
        super().__init__(proc, limits)

    def _kill_more(self) -> None:
        """bwrap's PID namespace dies with it; whatever is left in the cgroup too."""
        if self.cgroup is not None:
            self.cgroup.kill()

    def _exited(self) -> None:
        if self.cgroup is not None:
            self.counters = self.cgroup.counters()
            self.cgroup.remove()

    def failure_reason(self) -> str | None:
        """Which limit stopped it, or why the sandbox did not start; None if neither."""
        limits, rc = self.limits, self.proc.poll()
        if self.counters.oom_kills:
            return (
                f"memory limit of {limits.memory_mb} MB exceeded (killed by the cgroup OOM killer)"
            )
        if self.counters.pids_refused:
            return (
                f"process limit of {limits.max_processes} reached "
                f"(forks refused by the pids cgroup: {self.counters.pids_refused})"
            )
        if (why := super().failure_reason()) is not None:
            return why
        if rc is not None and rc != 0 and not self.killed:
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
    limits in a cgroup of its own: the ``SANDBOX`` preset.

    Limits: ``memory_mb`` (RAM of all its processes, no swap: the OOM killer stops
    it), ``max_processes`` (processes and threads at once), ``cpus`` (a CPU quota)
    through cgroups when this machine lets the agent create them; ``cpu_s`` through
    RLIMIT_CPU; ``wall_s`` by the handle. Without a writable memory cgroup
    ``memory_mb`` falls back to an address-space rlimit; without a pids cgroup the
    number of processes is NOT bounded (RLIMIT_NPROC does not apply to root), and
    without a cpu cgroup there is no CPU quota: ``enforces`` then leaves out
    ``max_processes`` / ``cpus``. Both fallbacks are logged.

    Raises
    ------
    ShoalError
        ``node.executor`` if bubblewrap is missing or does not work here.
    """

    name = "bwrap"
    preset = Restrictions.SANDBOX
    #: At best (cgroups with memory, pids and cpu); an instance may enforce fewer.
    enforces: frozenset[str] = frozenset(
        {"network", "host_files", "memory_mb", "max_processes", "cpus", "cpu_s", "wall_s"}
    )

    def __init__(self) -> None:
        from shoal._exec.probe import probe_bwrap

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
        controllers = self.cgroups.controllers if self.cgroups is not None else frozenset()
        self.enforces = BwrapExecutor.enforces - {
            limit
            for controller, limit in (("pids", "max_processes"), ("cpu", "cpus"))
            if controller not in controllers
        }
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

    def _cgroup(self, spec: InstanceSpec, limits: Restrictions) -> Cgroup | None:
        if self.cgroups is None:
            return None
        return self.cgroups.create(spec.workdir.name, CgroupLimits.of(limits))

    def command(
        self, spec: InstanceSpec, socket_path: Path, limits: Restrictions, cgroup: Cgroup | None
    ) -> list[str]:
        """The whole command line of one instance: join ``cgroup`` (when there is one),
        then bwrap under ``limits`` (the interpreter's environment added read-only),
        then the task runner (with an address-space rlimit only when no memory cgroup
        bounds memory, and ``cpu_s`` as RLIMIT_CPU).

        Raises
        ------
        OSError, subprocess.SubprocessError
            If the interpreter cannot be asked what it needs.
        """
        inner = limits
        if cgroup is not None and "memory" in cgroup.dirs:  # the cgroup bounds memory
            inner = dataclasses.replace(limits, memory_mb=None)
        env = task_env(spec)
        env["PATH"] = f"{spec.interpreter.parent}:{DEFAULT_PATH}"
        shown = dataclasses.replace(
            limits,
            ro_binds=(*interpreter_binds(spec.interpreter, spec.pythonpath), *limits.ro_binds),
        )
        argv = bwrap_argv(
            runner_argv(spec.interpreter, socket_path, inner),
            shown,
            workdir=spec.workdir,
            env=env,
        )
        argv[0] = self.binary
        if cgroup is not None:
            joins = [str(p) for p in cgroup.procs_files]
            argv = ["/bin/sh", "-c", _JOIN, "sh", *joins, "--", *argv]
        return argv

    def start(self, spec: InstanceSpec, socket_path: Path, token: str) -> TaskHandle:
        """Start the task runner in the sandbox and hand it its token on stdin.

        Raises
        ------
        ShoalError
            ``node.sandbox`` if the sandbox cannot be set up (the instance fails with
            this reason; the agent carries on).
        """
        (spec.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        limits = spec.restrictions(self.preset, sockets=[socket_path])
        cgroup = None
        try:
            cgroup = self._cgroup(spec, limits)
            argv = self.command(spec, socket_path, limits, cgroup)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            if cgroup is not None:
                cgroup.remove()
            raise ShoalError(
                f"the sandbox of {spec.instance_id} could not be set up: {e}",
                code="node.sandbox",
                hint="check the image's interpreter and the agent's cgroup permissions",
            ) from None
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
        return BwrapHandle(proc, cgroup, limits, log_path)
