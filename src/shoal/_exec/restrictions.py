"""What an executor stops task code from doing: the :class:`Restrictions` value and
its named presets.

A :class:`Restrictions` value says what task code may reach (the network, the host's
files) and what it may use (memory, processes, CPU, time). It is a request: each
executor declares the restrictions it enforces in its ``enforces`` attribute (a
frozenset of field names), and a restriction an executor does not enforce is not
applied. The presets name the policies shoal uses:

===============  ==========================================================  =========
preset           meaning                                                     used by
===============  ==========================================================  =========
``TRUSTED``      nothing restricted (``Restrictions.none()``): trusted code  ``process``
``SANDBOX``      no network; only the system directories, the instance's     ``bwrap``,
                 bundle, blob cache and datasets (read-only), its socket,    ``podman``,
                 work dir and a private ``/tmp``; the node's limits are       ``docker``
                 added per instance (:meth:`InstanceSpec.restrictions`)
``SIM_POOL``     no network; only the system directories, the Python         simulator
                 environment, the run's modules and the datasets its          ``bwrap``
                 module(s) declare (read-only), the run's blob folder        pool
                 (read-write), a work dir and a private ``/tmp``; no
                 per-instance limit (a worker runs many instances; the
                 engine's timeouts stop a hung one by killing its worker)
===============  ==========================================================  =========
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

#: Every restriction an executor can enforce (the names of the fields of
#: :class:`Restrictions`; ``ro_binds``, ``rw_binds`` and ``devices`` belong to
#: ``host_files``).
ENFORCEABLE = frozenset(
    {"network", "host_files", "memory_mb", "max_processes", "cpus", "cpu_s", "wall_s"}
)


@dataclass(frozen=True)
class Restrictions:
    """What task code may reach and use (None and True: not restricted).

    Attributes
    ----------
    network
        Whether it may reach the network. False: a network namespace of its own with
        only a loopback device (bwrap) or ``--network none`` (OCI).
    host_files
        Whether it sees the host's files (as the agent's user can). False: it sees only
        the read-only system directories, ``ro_binds``, ``rw_binds``, its work dir and a
        private ``/tmp``, each at the same path as on the host.
    ro_binds
        Host paths shown read-only when ``host_files`` is False (an interpreter's
        environment, a bundle, datasets, caches).
    rw_binds
        Host paths shown writable when ``host_files`` is False (a socket, a blob folder).
    memory_mb
        Memory in MiB: RAM of all its processes (a cgroup, or the container's limit) or,
        where no cgroup is available, the task runner's address-space rlimit.
    max_processes
        Processes and threads at once (a pids cgroup, or the container's pids limit).
    cpus
        A CPU quota in cores (a cpu cgroup, or the container's ``--cpus``).
    cpu_s
        CPU seconds (the task runner's RLIMIT_CPU: SIGXCPU at the limit).
    wall_s
        Wall-clock seconds from the start; the handle kills the instance past them.
    devices
        Device files shown at ``/dev/<name>`` (the GPU's ``/dev/nvidia*`` for a task
        that asked for a GPU; none otherwise: a sandbox's ``/dev`` is a fresh minimal one).
    """

    network: bool = True
    host_files: bool = True
    ro_binds: tuple[Path, ...] = ()
    rw_binds: tuple[Path, ...] = ()
    memory_mb: int | None = None
    max_processes: int | None = None
    cpus: float | None = None
    cpu_s: int | None = None
    wall_s: float | None = None
    devices: tuple[Path, ...] = ()

    TRUSTED: ClassVar[Restrictions]
    SANDBOX: ClassVar[Restrictions]
    SIM_POOL: ClassVar[Restrictions]

    @classmethod
    def none(cls) -> Restrictions:
        """Nothing restricted: the ``TRUSTED`` preset."""
        return cls()

    def with_binds(self, ro: Iterable[Path] = (), rw: Iterable[Path] = ()) -> Restrictions:
        """A copy that also shows ``ro`` read-only and ``rw`` writable."""
        return dataclasses.replace(
            self,
            ro_binds=(*self.ro_binds, *map(Path, ro)),
            rw_binds=(*self.rw_binds, *map(Path, rw)),
        )

    def active(self) -> frozenset[str]:
        """The names of the restrictions this value asks for (see :data:`ENFORCEABLE`)."""
        on = {name for name in ("network", "host_files") if not getattr(self, name)}
        limits = ("memory_mb", "max_processes", "cpus", "cpu_s", "wall_s")
        on |= {name for name in limits if getattr(self, name) is not None}
        return frozenset(on)

    def describe(self) -> str:
        """One line in words, e.g. ``"no network; binds only (3 ro, 1 rw); 256 MB"``."""
        parts = ["network" if self.network else "no network"]
        if self.host_files:
            parts.append("host files")
        else:
            parts.append(f"binds only ({len(self.ro_binds)} ro, {len(self.rw_binds)} rw)")
        if self.memory_mb is not None:
            parts.append(f"{self.memory_mb} MB")
        if self.max_processes is not None:
            parts.append(f"{self.max_processes} processes")
        if self.cpus is not None:
            parts.append(f"{self.cpus:g} CPUs")
        if self.cpu_s is not None:
            parts.append(f"{self.cpu_s} CPU s")
        if self.wall_s is not None:
            parts.append(f"{self.wall_s:g} s wall")
        return "; ".join(parts)


Restrictions.TRUSTED = Restrictions.none()
Restrictions.SANDBOX = Restrictions(network=False, host_files=False)
Restrictions.SIM_POOL = Restrictions(network=False, host_files=False)

TRUSTED = Restrictions.TRUSTED
SANDBOX = Restrictions.SANDBOX
SIM_POOL = Restrictions.SIM_POOL
