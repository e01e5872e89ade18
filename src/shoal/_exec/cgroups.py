"""Per-instance cgroups: memory, process and CPU limits, and why a process was killed.

Works with cgroup v2 (the unified hierarchy) or v1 (one hierarchy per controller),
whichever has the controllers on this machine. Instance cgroups are created under the
agent's own cgroup, so whatever bounds the agent still bounds its tasks:

- v1: ``<controller mount>/<agent's path>/shoal-<agent pid>-<name>`` for each of
  ``memory``, ``pids`` and ``cpu`` that is mounted and writable;
- v2: ``<agent's cgroup>/shoal-<agent pid>-<name>``. Controllers reach a child only
  through the parent's ``cgroup.subtree_control``, which a cgroup holding processes
  cannot set; so, as container runtimes do, the processes of the agent's cgroup are
  first moved into a leaf ``shoal-init`` (once; an agent already in a ``shoal-init``
  uses its parent).

A process joins an instance cgroup by writing its own pid into the ``cgroup.procs``
files (:attr:`Cgroup.procs_files`) before it execs the sandbox, so nothing it starts
can escape the limits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from shoal._exec.restrictions import Restrictions

log = logging.getLogger("shoal.node")

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
INIT_LEAF = "shoal-init"


@dataclass(frozen=True)
class CgroupLimits:
    """Limits of one instance (None: none).

    Attributes
    ----------
    memory_mb
        Memory (RAM, no swap) of all its processes together, in MiB.
    max_processes
        Processes and threads at once.
    cpus
        CPU time per wall-clock second (1.5: one and a half cores).
    """

    memory_mb: int | None = None
    max_processes: int | None = None
    cpus: float | None = None

    @classmethod
    def of(cls, limits: Restrictions) -> CgroupLimits:
        """The part of ``limits`` a cgroup enforces."""
        return cls(limits.memory_mb, limits.max_processes, limits.cpus)


@dataclass(frozen=True)
class Counters:
    """What the kernel counted for one cgroup.

    Attributes
    ----------
    oom_kills
        Processes the OOM killer killed because the memory limit was reached.
    pids_refused
        Forks (or new threads) refused because the process limit was reached.
    """

    oom_kills: int = 0
    pids_refused: int = 0


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (``key value`` per line) as a dict; {} if unreadable."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value.strip())
    return out


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class Cgroup:
    """One instance's cgroup (v2: one folder; v1: one folder per controller).

    Parameters
    ----------
    version
        1 or 2.
    dirs
        Controller -> folder (v2: every controller maps to the same folder).
    """

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs

    @property
    def folders(self) -> list[Path]:
        """Its distinct folders."""
        return sorted(set(self.dirs.values()))

    @property
    def procs_files(self) -> list[Path]:
        """The files a process writes its pid into to join."""
        return [d / "cgroup.procs" for d in self.folders]

    def set_limits(self, limits: CgroupLimits) -> None:
        """Write the limits (a controller it does not have is skipped).

        Raises
        ------
        OSError
            If the kernel refuses a value.
        """
        mem, pids, cpu = (self.dirs.get(c) for c in CONTROLLERS)
        if mem is not None and limits.memory_mb is not None:
            n = str(limits.memory_mb * 1024 * 1024)
            if self.version == 2:
                _write(mem / "memory.max", n)
                for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if (mem / name).exists():
                        _write(mem / name, value)
            else:
                _write(mem / "memory.limit_in_bytes", n)
                if (mem / "memory.memsw.limit_in_bytes").exists():  # swap accounting on
                    _write(mem / "memory.memsw.limit_in_bytes", n)
                with contextlib.suppress(OSError):
                    _write(mem / "memory.swappiness", "0")
        if pids is not None and limits.max_processes is not None:
            _write(pids / "pids.max", str(limits.max_processes))
        if cpu is not None and limits.cpus is not None:
            quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
            if self.version == 2:
                _write(cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(quota))

    def counters(self) -> Counters:
        """The OOM kills and refused forks counted so far."""
        oom = 0
        mem = self.dirs.get("memory")
        if mem is not None:
            events = "memory.events" if self.version == 2 else "memory.oom_control"
            oom = _read_keyed(mem / events).get("oom_kill", 0)
        pids = self.dirs.get("pids")
        refused = _read_keyed(pids / "pids.events").get("max", 0) if pids is not None else 0
        return Counters(oom, refused)

    def pids(self) -> set[int]:
        """The processes in it now."""
        found: set[int] = set()
        for d in self.folders:
            with contextlib.suppress(OSError):
                found |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
        return found

    def kill(self) -> None:
        """SIGKILL every process in it."""
        if self.version == 2 and (self.folders[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.folders[0] / "cgroup.kill", "1")
                return
        for _ in range(20):  # a fork may race the sweep: sweep until empty
            left = self.pids()
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self, timeout: float = 5.0) -> bool:
        """Kill what is left and delete its folders; False if one could not be."""
        deadline = time.monotonic() + timeout
        pending = self.folders
        while pending:
            self.kill()
            left = []
            for d in pending:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        log.warning("cannot remove cgroup %s: %s", d, e)
                        continue
                    left.append(d)
            pending = left
            if pending and time.monotonic() > deadline:
                log.warning("cgroup %s still has processes; left in place", pending[0])
                return False
            if pending:
                time.sleep(0.02)
        return True


def _mounts() -> list[tuple[str, Path, str, set[str]]]:
    """(fstype, mount point, mount root, super options) of every cgroup mount."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3 or not rfields[0].startswith("cgroup"):
                continue
            out.append((rfields[0], Path(fields[4]), fields[3], set(rfields[2].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """Controller (v1) or "" (v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _under(mountpoint: Path, root: str, path: str) -> Path:
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return mountpoint if rel in (".", "") else mountpoint / rel.lstrip("/")


def _writable_dir(base: Path) -> bool:
    probe = base / f"shoal-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except FileExistsError:
        pass
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


class Cgroups:
    """Where this agent creates instance cgroups (see :meth:`detect`).

    Parameters
    ----------
    version
        1 or 2.
    bases
        Controller -> the folder instance cgroups are created in.
    """

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self.bases = bases

    @property
    def controllers(self) -> frozenset[str]:
        """The controllers it can limit."""
        return frozenset(self.bases)

    def describe(self) -> str:
        """One line for the log: version, controllers and where."""
        where = ", ".join(f"{c} at {p}" for c, p in sorted(self.bases.items()))
        return f"cgroup v{self.version} ({where})"

    def create(self, name: str, limits: CgroupLimits) -> Cgroup:
        """A new cgroup with ``limits`` for one instance.

        Raises
        ------
        OSError
            If it cannot be created or a limit cannot be set (nothing is left behind).
        """
        leaf = f"shoal-{os.getpid()}-{name}"
        dirs = {c: base / leaf for c, base in self.bases.items()}
        group = Cgroup(self.version, dirs)
        try:
            for d in group.folders:
                d.mkdir()
            group.set_limits(limits)
        except OSError:
            group.remove(timeout=1.0)
            raise
        return group

    @classmethod
    def detect(cls) -> Cgroups | str:
        """The usable cgroups of this machine, or why there are none.

        v2 is used when the unified hierarchy has the memory and pids controllers; v1
        otherwise. Leftovers of agents that are gone are removed.
        """
        if not Path("/proc/self/cgroup").exists():
            return "this system has no cgroups (/proc/self/cgroup is missing)"
        mounts, own = _mounts(), _own_paths()
        v2 = [(m, r) for fs, m, r, _ in mounts if fs == "cgroup2"]
        reasons = []
        if v2 and "" in own:
            base = _under(v2[0][0], v2[0][1], own[""])
            found = _v2(base)
            if isinstance(found, Cgroups):
                found.sweep()
                return found
            reasons.append(found)
        bases: dict[str, Path] = {}
        for fs, mountpoint, root, opts in mounts:
            for c in CONTROLLERS:
                if fs == "cgroup" and c in opts and c in own and c not in bases:
                    base = _under(mountpoint, root, own[c])
                    if _writable_dir(base):
                        bases[c] = base
        if bases:
            found_v1 = cls(1, bases)
            found_v1.sweep()
            return found_v1
        reasons.append("no writable cgroup v1 memory / pids / cpu hierarchy")
        return "; ".join(reasons)

    def sweep(self) -> None:
        """Remove the instance cgroups of agent processes that no longer exist."""
        for base in set(self.bases.values()):
            with contextlib.suppress(OSError):
                for d in base.glob("shoal-*-*"):
                    pid = d.name.split("-")[1]
                    if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                        Cgroup(self.version, {"": d}).remove(timeout=0.5)


def _v2(own: Path) -> Cgroups | str:
    """The v2 setup under ``own`` (this process's cgroup), or why not."""
    if own.name == INIT_LEAF:  # we were moved aside by an earlier agent
        own = own.parent
    try:
        available = set((own / "cgroup.controllers").read_text().split())
    except OSError as e:
        return f"cannot read {own}/cgroup.controllers: {e.strerror}"
    wanted = [c for c in CONTROLLERS if c in available]
    if "memory" not in wanted or "pids" not in wanted:
        return f"cgroup v2 at {own} lacks the memory or pids controller (not delegated)"
    subtree = own / "cgroup.subtree_control"
    try:
        enabled = set(subtree.read_text().split())
        if not {"memory", "pids"} <= enabled:
            _enable(own, wanted)
    except OSError as e:
        return f"cannot enable cgroup v2 controllers in {subtree}: {e.strerror}"
    enabled = set(subtree.read_text().split())
    return Cgroups(2, {c: own for c in CONTROLLERS if c in enabled})


def _enable(own: Path, wanted: list[str]) -> None:
    """Enable ``wanted`` for the children of ``own``, first moving its processes into
    a leaf when it holds any (the no-internal-process rule)."""
    subtree = own / "cgroup.subtree_control"
    try:
        _write(subtree, " ".join(f"+{c}" for c in ("memory", "pids")))
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        leaf = own / INIT_LEAF
        leaf.mkdir(exist_ok=True)
        moved = 0
        for _ in range(5):  # processes may fork while we move them
            pids = (own / "cgroup.procs").read_text().split()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, OSError):
                    _write(leaf / "cgroup.procs", pid)
                    moved += 1
        log.info(
            "moved %d processes from %s into %s to enable cgroup controllers", moved, own, leaf
        )
        _write(subtree, " ".join(f"+{c}" for c in ("memory", "pids")))
    if "cpu" in wanted:
        with contextlib.suppress(OSError):
            _write(subtree, "+cpu")
