"""Node-level executors by name: what ``executor = "..."`` in node.toml selects.

- ``process`` (alias ``subprocess``): a plain child process with rlimits; no isolation
  (:mod:`shoal._exec.process`);
- ``bwrap``: bubblewrap with cgroup limits (:mod:`shoal._exec.bwrap`);
- ``podman``, ``docker``: a container of the module's OCI image (:mod:`shoal._exec.oci`);
- ``auto`` (the default): ``bwrap`` on Linux when it works here, otherwise ``process``
  with a warning that says why.

More may be registered (:func:`register_executor`); the agent only knows the
:class:`~shoal._exec.base.Executor` interface.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from shoal._errors import ShoalError
from shoal._exec.base import Executor
from shoal._exec.process import SubprocessExecutor

log = logging.getLogger("shoal.node")

ExecutorFactory = Callable[[], Executor]


def _bwrap() -> Executor:
    from shoal._exec.bwrap import BwrapExecutor

    return BwrapExecutor()


def _auto() -> Executor:
    """``bwrap`` when it works on this machine, else ``process`` with a warning."""
    if not sys.platform.startswith("linux"):
        why = f"bubblewrap needs Linux (this is {sys.platform})"
    else:
        from shoal._exec.probe import probe_bwrap

        why = probe_bwrap()
        if why is None:
            return _bwrap()
    log.warning(
        "executor 'auto': falling back to 'process', which does NOT isolate task code, because %s",
        why,
    )
    return SubprocessExecutor()


def _oci(engine: str) -> ExecutorFactory:
    """A container engine's executor (:mod:`shoal._exec.oci`), imported on use."""

    def make() -> Executor:
        from shoal._exec.oci import OciExecutor

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
