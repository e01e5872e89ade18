"""``shoal.simulate``: run a swarm on virtual nodes in this machine."""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shoal._data.nodes import build_nodes
from shoal._define.compile import compile_swarm
from shoal._define.swarm import Swarm
from shoal._engine.timers import DEFAULT_TASK_TIMEOUT_S, check_task_timeout
from shoal._errors import ShoalError
from shoal._exec.jobs import default_workers, normalize_executor
from shoal._exec.pool_bwrap import check_bwrap
from shoal._exec.requirements import RequirementChecker
from shoal._plan import Plan
from shoal._privacy.ledger import Budget
from shoal._sim.driver import OnMetrics, Progress, Simulation, Watch
from shoal._sim.profiles import NodeProfile, profiled_nodes
from shoal._sim.run import SimulationRun

log = logging.getLogger("shoal.simulate")


def _check_requirements(plan: Plan) -> None:
    """Every virtual node runs modules with this Python: refuse a module whose
    requirements it lacks, as a node refuses one its image lacks."""
    problems = []
    for module in plan.modules.values():
        unmet = _CHECKER.missing(list(module.requirements), Path(sys.executable))
        if unmet:
            problems.append(f"module {module.name!r} needs {'; '.join(unmet)}")
    if problems:
        raise ShoalError(
            "the simulator runs every module with this Python, which lacks requirements: "
            + ", ".join(problems),
            code="sim.requirements",
            hint=f"install them into this environment ({sys.prefix}), or drop them from "
            "requirements= / requirements.txt",
        )


_CHECKER = RequirementChecker()
#: Where the pool's workers run: ``local`` processes, or Ray actors in a cluster.
BACKENDS = ("local", "ray")


def simulate(
    swarm: Swarm,
    nodes: int | Sequence[NodeProfile | Mapping[str, Any]] | None = 10,
    datasets: Mapping[str, str | os.PathLike[str]] | None = None,
    partition: str | None = None,
    seed: int = 0,
    executor: str = "process",
    workers: int | None = None,
    max_iterations: int | None = None,
    nodes_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    keep_results: int | None = 2,
    on_metrics: OnMetrics | None = None,
    task_timeout: float | None = None,
    watch: Watch | None = None,
    raise_on_failure: bool = True,
    privacy: Mapping[str, Mapping[str, float]] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
) -> SimulationRun:
    """Run ``swarm`` on virtual nodes and return the run.

    Parameters
    ----------
    swarm
        The swarm to run (it is validated and compiled first).
    nodes
        How many virtual nodes (``node-00000``, ...), or a list of
        :class:`~shoal.NodeProfile` (or dicts with its keys) for a heterogeneous fleet:
        per kind of node its count, CPUs, memory, GPUs, datasets, images, load and link.
        Profiled nodes advertise their facts, so placement checks ``gpu=True`` and each
        module's ``resources`` against them. Ignored with ``nodes_dir``.
    datasets
        ``{name: path}`` every node maps; split across nodes with ``partition``, or
        shared whole by every node when ``partition`` is None.
    partition
        ``"iid"``, ``"dirichlet:ALPHA"`` or ``"shards:K"``.
    seed
        Seeds placement (``method="random"``) and partitioning: a seeded run is
        reproducible.
    executor
        ``"process"`` (a pool of worker processes; ``"processes"`` is the same),
        ``"bwrap"`` (the same pool, each worker sandboxed by bubblewrap as a node's
        ``bwrap`` executor would: it sees only the Python environment, the modules and
        the datasets, read-only, and has no network; Linux, ``apt-get install
        bubblewrap``) or ``"inline"`` (this process; breakpoints work, timeouts are not
        enforced).
    workers
        Size of the process pool (default: one per core).
    max_iterations
        Override the swarm's ``max_iterations``.
    nodes_dir
        A folder with one subfolder per node holding that node's dataset files.
    run_dir
        Where to keep the run's blobs and logs (default: a temporary folder removed
        when the returned run is garbage-collected). Partitioned datasets are split
        into ``run_dir/data`` for the run only: that folder is removed when it ends.
    progress
        Called as ``progress(what, iteration, done, scheduled)``.
    keep_results
        Results of how many past iterations to keep besides the current one (older
        ones are dropped to bound disk use; ``None`` keeps every iteration).
    on_metrics
        Called with each batch of new metric values (a list of
        :class:`~shoal.MetricRecord`) as the run goes: at most twice a second, when an
        iteration starts and once at the end (``shoal simulate`` shows the latest
        values and streams them to ``--track`` this way).
    task_timeout
        Seconds: the timeout of every task declared without one (``Task(timeout=None)``).
        None: the engine's default, 600 s. Nothing waits forever: a task that never
        returns fails at its timeout, naming its node and task.
    watch
        Called about four times a second with the instances running now
        (:class:`~shoal._sim.run.RunningInstance`: task, node, age, timeout), oldest
        first; a live display shows which node is slow or stuck.
    raise_on_failure
        Raise :class:`~shoal.SwarmFailedError` if the swarm fails (the default: a failed
        run is never mistaken for a trained one). ``False`` returns the failed run.
    privacy
        ``{dataset: {"epsilon": e, "delta": d}}``: the privacy budget every virtual node
        enforces on its share of the dataset, as a node's ``[privacy]`` table does (each
        node keeps its own ledger; a charge past it fails that instance with
        ``privacy.budget``). Needs dp-accounting.

    backend
        ``"local"`` (the default: the pool's workers are processes on this machine) or
        ``"ray"``: the workers are Ray actors, one CPU each, anywhere in a Ray cluster
        (``pip install 'shoal[ray]'``); the engine, the store and the aggregation stay
        in this process. ``workers`` then defaults to the cluster's CPUs. Values move
        through the run's blob folder, so ``run_dir`` must be on a filesystem that
        every Ray node mounts at the same path (one machine: any folder). A worker
        that dies is replaced; the instance it ran fails as a crash (the task's
        ``retries`` apply). See docs/scale.md.
    ray_address
        With ``backend="ray"``: None uses the Ray this process is connected to
        (``ray.init``) or starts a local one; ``"auto"`` joins the cluster that ``ray
        start`` runs on this machine; ``"HOST:PORT"`` that cluster's head.

    Returns
    -------
    SimulationRun
        Status, iterations, failures (node id and traceback), final globals, results,
        logs and metrics.

    Raises
    ------
    KeyboardInterrupt
        After a Ctrl-C, which stops the swarm cleanly (its instances are cancelled and
        the workers stopped): the exception's ``run`` attribute is the stopped run
        (status ``"stopped"``) with every log, metric and result so far. A second Ctrl-C
        interrupts at once.
    SwarmFailedError
        If the swarm failed and ``raise_on_failure`` is true: its message shows every
        failure's task, node and traceback; ``.failures`` has them all and ``.result``
        is the failed run (logs, metrics, stories).
    ShoalError
        For an invalid swarm or argument, e.g. ``sim.executor`` (an unknown executor),
        ``sim.bwrap`` (bubblewrap is missing or does not work here),
        ``sim.requirements`` (this Python lacks a module's ``requirements``),
        ``sim.backend`` (an unknown backend, or one that cannot run this executor),
        ``sim.ray`` (ray is missing, or its cluster cannot be reached or gives no
        worker in time) or ``sim.ray_store`` (a Ray node does not see the run folder).
    """
    if backend not in BACKENDS:
        raise ShoalError(
            f"unknown backend {backend!r}",
            code="sim.backend",
            hint=f"use one of {', '.join(BACKENDS)}",
        )
    if backend == "ray" and normalize_executor(executor) != "process":
        raise ShoalError(
            f"backend 'ray' runs the process pool's workers as Ray actors; executor "
            f"{executor!r} is not available on it",
            code="sim.backend",
            hint="drop executor= (or --executor) with backend 'ray', or use backend 'local'",
        )
    if max_iterations is not None and (not isinstance(max_iterations, int) or max_iterations < 1):
        raise ShoalError(
            f"max_iterations={max_iterations!r} is not an int >= 1",
            code="sim.max_iterations",
            hint="pass a positive int",
        )
    if task_timeout is not None:
        try:
            task_timeout = check_task_timeout(task_timeout)
        except ValueError as e:
            raise ShoalError(
                f"task_timeout={task_timeout!r}: {e}",
                code="sim.task_timeout",
                hint="pass seconds, e.g. task_timeout=1800, or None for the default "
                f"({DEFAULT_TASK_TIMEOUT_S:g}s)",
            ) from None
    if normalize_executor(executor) == "bwrap":
        check_bwrap()  # before any partitioning work: say at once what is missing
    if not isinstance(swarm, Swarm) and hasattr(swarm, "to_swarm"):
        swarm = swarm.to_swarm()  # a steps Artifact compiles to a Swarm
    compiled = compile_swarm(swarm)
    plan = compiled.plan
    _check_requirements(plan)
    if networked := sorted({t.network for t in plan.tasks if t.network is not None}):
        log.warning(
            "swarm %r: networks %s have no effect in the simulator (only a node's "
            "podman/docker executor gives a swarm's tasks a shared network)",
            plan.name,
            networked,
        )
    if max_iterations is not None:
        plan = plan.model_copy(
            update={"limits": plan.limits.model_copy(update={"max_iterations": max_iterations})}
        )
    if nodes_dir is None:  # before partitioning: a misspelt name is found at once
        _check_dataset_names(plan, set(datasets or {}))
    cleanup = run_dir is None
    root = Path(tempfile.mkdtemp(prefix="shoal-sim-")) if run_dir is None else Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()  # workers may run elsewhere (a sandbox): paths must be absolute
    # Partitioned shares live in RUN_DIR/data for the run only, and go when it ends,
    # whatever its end: a seeded split is written again in less time than the run
    # takes, while copies kept per run would fill the disk (docs/simulator.md).
    shares = root / "data"
    try:
        if nodes_dir is None and nodes is not None and not isinstance(nodes, int):
            node_list = profiled_nodes(nodes, datasets, partition, seed, shares)
        else:
            node_list = build_nodes(
                nodes if isinstance(nodes, int) else None,
                datasets,
                partition,
                seed,
                shares,
                Path(nodes_dir) if nodes_dir is not None else None,
            )
        if nodes_dir is not None:
            _check_dataset_names(plan, {d for n in node_list for d in n.datasets})
        if privacy:
            budgets = _budgets(privacy, datasets)
            for node in node_list:
                node.privacy = budgets
        sim = Simulation(
            plan,
            compiled.bundles,
            node_list,
            root,
            executor=executor,
            workers=_workers(workers, backend, len(node_list)),
            seed=seed,
            progress=progress,
            cleanup=cleanup,
            keep_results=keep_results,
            on_metrics=on_metrics,
            task_timeout_s=task_timeout,
            watch=watch,
            sources=compiled.sources,
            backend=backend,
            ray_address=ray_address,
        )
        run = sim.run()
    finally:
        shutil.rmtree(shares, ignore_errors=True)
    if raise_on_failure and run.status == "failed":
        run.raise_for_status()
    return run


def _workers(workers: int | None, backend: str, nodes: int) -> int:
    """The pool's size: as asked, else one per core (backend ``ray``: 0, which the Ray
    pool reads as one per CPU of the cluster), never more than there are nodes."""
    if workers is not None:
        return workers
    return 0 if backend == "ray" else min(default_workers(), nodes)


def _check_dataset_names(plan: Plan, given: set[str]) -> None:
    """A dataset the swarm needs that no node has, next to one given that no module
    declares, is most likely a misspelling: say both, with the likely fix (the engine
    alone would only say that every node lacks the dataset)."""
    needed: dict[str, list[str]] = {}
    for t in plan.tasks:
        for d in plan.modules[t.module].datasets:
            needed.setdefault(d, []).append(t.alias)
    missing = [d for d in needed if d not in given]
    unused = sorted(given - set(needed))
    if not missing or not unused:
        return
    lines, explained = [], set()
    for d in missing:
        tasks = ", ".join(repr(a) for a in needed[d])
        line = f"task {tasks} needs dataset {d!r}, which no node has"
        close = difflib.get_close_matches(d, unused, n=1)
        if close:
            explained.add(close[0])
            line += f"; dataset {close[0]!r} was given and not used (did you mean {d!r}?)"
        lines.append(line)
    rest = [u for u in unused if u not in explained]
    if rest:
        lines.append(f"given and not used: {', '.join(map(repr, rest))}")
    raise ShoalError(
        "; ".join(lines),
        code="sim.dataset_name",
        hint=f"name each dataset as the modules declare it, e.g. --dataset {missing[0]}=PATH",
    )


def _budgets(
    privacy: Mapping[str, Mapping[str, float]],
    datasets: Mapping[str, str | os.PathLike[str]] | None,
) -> dict[str, Budget]:
    out = {}
    for name, b in privacy.items():
        try:
            budget = Budget(float(b["epsilon"]), float(b.get("delta", 1e-5)))
        except (KeyError, TypeError, ValueError):
            budget = None
        if budget is None or not budget.epsilon > 0 or not 0 <= budget.delta < 1:
            raise ShoalError(
                f"privacy[{name!r}]={b!r} is not a budget",
                code="sim.privacy",
                hint='pass {"epsilon": a number > 0, "delta": a number in [0, 1)}',
            )
        out[name] = budget
    return out
