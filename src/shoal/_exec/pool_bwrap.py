"""The simulator's pool under bubblewrap (``executor="bwrap"``): how each worker is
sandboxed, with the ``SIM_POOL`` restrictions.

A worker sees the system directories and this Python's environment read-only, the
run's extracted modules read-only, the datasets its group's modules declare (every
virtual node's share of each) read-only, the run's blob folder read-write (where values
are exchanged), a private work dir (its HOME and working directory) and a private
``/tmp``. The pool groups workers by the set of datasets a module declares, so a task
never sees a dataset its module did not declare (:mod:`shoal._exec.pool`).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shoal._errors import ShoalError
from shoal._exec import bwrap as _bwrap
from shoal._exec.restrictions import Restrictions
from shoal._runtime.loader import Outcome
from shoal._world.service import NodeInfo

MAX_DATASET_BINDS = 256  # past this many paths, folders holding nothing else are bound
# Variables a sandboxed worker keeps from the driver's environment (names or prefixes):
# thread counts and allocator tuning change speed, PYTHONPATH can be where shoal is.
_KEEP_ENV = re.compile(r"^(MALLOC_|OMP_|OPENBLAS_|MKL_|NUMEXPR_|PYTHONPATH$|PYTHONHASHSEED$)")
# Failures that are what the sandbox does to code that reaches outside it.
_SANDBOXED_ERRORS = re.compile(
    r"^(FileNotFoundError|PermissionError|ConnectionRefusedError|ConnectionError|OSError|"
    r"gaierror|socket\.gaierror)\b"
)
SANDBOX_NOTE = (
    " [executor 'bwrap': the task sees only the Python environment, its module, the "
    "datasets its module declares (read-only), a private /tmp and work dir, and has no "
    "network]"
)


def bwrap_problem() -> str | None:
    """None if bubblewrap can sandbox this Python here; otherwise why not, in words."""
    from shoal._exec.probe import probe_bwrap

    if _bwrap.bwrap_binary() is None:
        return "bubblewrap is not installed"
    return probe_bwrap()


def check_bwrap() -> None:
    """Raise unless ``executor="bwrap"`` can work on this machine.

    Raises
    ------
    ShoalError
        ``sim.bwrap`` naming what is missing and the fix.
    """
    problem = bwrap_problem()
    if problem is not None:
        raise ShoalError(
            f"executor 'bwrap' cannot run here: {problem}",
            code="sim.bwrap",
            hint="install bubblewrap (apt-get install bubblewrap; it needs Linux), or use "
            "--executor process",
        )


def _only_these(folder: Path, paths: set[Path]) -> bool:
    """Whether everything in ``folder`` is one of ``paths`` (binding it shows no more)."""
    try:
        return all(p.resolve() in paths for p in folder.iterdir())
    except OSError:
        return False


def dataset_binds(paths: Iterable[Path], data_dir: Path) -> list[Path]:
    """The folders and files to bind for the given dataset paths, as few as show no
    more than them: a partitioned dataset's folder under the simulator's ``data_dir``
    once (``data_dir/<name>`` holds only that dataset's shares), every other path
    itself, or, past :data:`MAX_DATASET_BINDS` paths, their folder when it holds
    nothing else."""
    data_dir = data_dir.resolve()
    found: set[Path] = set()
    for p in paths:
        p = p.resolve()
        if data_dir in p.parents:
            found.add(data_dir / p.relative_to(data_dir).parts[0])
        else:
            found.add(p)
    if len(found) > MAX_DATASET_BINDS:
        folders = {p.parent for p in found if data_dir not in p.parents and p != data_dir}
        whole = {d for d in folders if _only_these(d, found)}
        found = {p.parent if p.parent in whole else p for p in found}
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


@dataclass
class BwrapSandbox:
    """How each simulator worker runs under bubblewrap (see the module docstring).

    It has its own PID and network namespaces (loopback only: nothing outside is
    reachable), no capabilities, a scrubbed environment, and dies with the driver. Its
    channel to the driver is an inherited socket file descriptor, which crosses the
    sandbox.

    Attributes
    ----------
    bwrap
        The bwrap executable.
    limits
        What every worker sees (interpreter and modules read-only, the blob folder
        read-write); :meth:`wrap` adds the datasets of the worker's group.
    datasets
        Dataset name -> every virtual node's path for it.
    data_dir
        The simulator's partition folder (``run_dir/data``).
    work_root
        Holds one private work dir per worker; removed by :meth:`close`.
    """

    bwrap: str
    limits: Restrictions
    datasets: Mapping[str, tuple[Path, ...]]
    data_dir: Path
    work_root: Path
    enforces: frozenset[str] = frozenset({"network", "host_files"})
    _spawned: int = 0
    _binds: dict[frozenset[str], tuple[Path, ...]] = field(default_factory=dict)

    @classmethod
    def for_run(cls, run_dir: Path, nodes: Iterable[NodeInfo]) -> BwrapSandbox:
        """The sandbox of a simulation in ``run_dir`` over ``nodes``.

        Raises
        ------
        ShoalError
            ``sim.bwrap`` if bubblewrap is missing or does not work here.
        """
        if not run_dir.is_absolute():  # job folders and blob paths must mean the same inside
            raise ShoalError(
                f"run_dir {run_dir} is relative",
                code="sim.bwrap",
                hint="pass an absolute run_dir with executor 'bwrap'",
            )
        check_bwrap()
        binary = _bwrap.bwrap_binary()
        assert binary is not None  # check_bwrap() passed
        pythonpath = os.environ.get("PYTHONPATH") or None
        ro = [*_bwrap.interpreter_binds(Path(sys.executable), pythonpath), run_dir / "modules"]
        by_name: dict[str, list[Path]] = defaultdict(list)
        for n in nodes:
            for name, path in n.datasets.items():
                by_name[name].append(Path(path))
        return cls(
            bwrap=binary,
            limits=Restrictions.SIM_POOL.with_binds(ro=ro, rw=[run_dir / "blobs"]),
            datasets={name: tuple(paths) for name, paths in by_name.items()},
            data_dir=run_dir / "data",
            work_root=Path(tempfile.mkdtemp(prefix="shoal-sim-bwrap-")),
        )

    def binds_for(self, names: frozenset[str]) -> tuple[Path, ...]:
        """What to bind for a worker whose modules declare the datasets ``names``."""
        found = self._binds.get(names)
        if found is None:
            paths = [p for name in sorted(names) for p in self.datasets.get(name, ())]
            found = self._binds[names] = tuple(dataset_binds(paths, self.data_dir))
        return found

    def wrap(
        self, argv: list[str], env: Mapping[str, str], datasets: frozenset[str] = frozenset()
    ) -> tuple[list[str], dict[str, str]]:
        """The bwrap command line and bwrap's own environment for one worker.

        Parameters
        ----------
        argv
            The worker's command line.
        env
            The environment the worker would have unsandboxed; it keeps only thread
            counts, allocator tuning, PYTHONPATH and PYTHONHASHSEED.
        datasets
            The datasets the worker's modules declare: only these are bound.

        Returns
        -------
        tuple of (list of str, dict)
            The command line and a minimal environment for bwrap itself.
        """
        self._spawned += 1
        workdir = self.work_root / f"w{self._spawned}"
        workdir.mkdir(parents=True)
        inner = {
            "PATH": _bwrap.DEFAULT_PATH,
            "HOME": str(workdir),
            "TMPDIR": "/tmp",
            "LANG": env.get("LANG", "C.UTF-8"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        inner.update({k: v for k, v in env.items() if _KEEP_ENV.match(k)})
        limits = self.limits.with_binds(ro=self.binds_for(datasets))
        wrapped = _bwrap.bwrap_argv(argv, limits, workdir=workdir, env=inner)
        wrapped[0] = self.bwrap
        outer = {"PATH": env.get("PATH", _bwrap.DEFAULT_PATH), "LANG": inner["LANG"]}
        return wrapped, outer

    def explain(self, outcome: Outcome) -> Outcome:
        """Say that the sandbox is why, when a task failed reaching outside it."""
        if _SANDBOXED_ERRORS.match(outcome.error) and SANDBOX_NOTE not in outcome.error:
            return Outcome(False, outcome.error + SANDBOX_NOTE, outcome.traceback)
        return outcome

    def close(self) -> None:
        """Remove the workers' work dirs."""
        shutil.rmtree(self.work_root, ignore_errors=True)
