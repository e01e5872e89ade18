"""``shoal.simulate``: run a swarm on virtual nodes in this machine."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from shoal._data.nodes import build_nodes
from shoal._define.compile import compile_swarm
from shoal._define.swarm import Swarm
from shoal._errors import ShoalError
from shoal._exec.jobs import default_workers, normalize_executor
from shoal._exec.pool_bwrap import check_bwrap
from shoal._privacy.ledger import Budget
from shoal._sim.driver import Progress, Simulation
from shoal._sim.run import SimulationRun


def simulate(
    swarm: Swarm,
    nodes: int | None = 10,
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
    privacy: Mapping[str, Mapping[str, float]] | None = None,
) -> SimulationRun:
    """Run ``swarm`` on virtual nodes and return the run.

    Parameters
    ----------
    swarm
        The swarm to run (it is validated and compiled first).
    nodes
        How many virtual nodes (``node-00000``, ...). Ignored with ``nodes_dir``.
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
        Where to keep the run's data, blobs and logs (default: a temporary folder
        removed when the returned run is garbage-collected).
    progress
        Called as ``progress(what, iteration, done, scheduled)``.
    keep_results
        Results of how many past iterations to keep besides the current one (older
        ones are dropped to bound disk use; ``None`` keeps every iteration).
    privacy
        ``{dataset: {"epsilon": e, "delta": d}}``: the privacy budget every virtual node
        enforces on its share of the dataset, as a node's ``[privacy]`` table does (each
        node keeps its own ledger; a charge past it fails that instance with
        ``privacy.budget``). Needs dp-accounting.

    Returns
    -------
    SimulationRun
        Status, iterations, failures (node id and traceback), final globals, results,
        logs and metrics. A failed swarm does not raise: check ``run.ok`` or call
        ``run.raise_for_status()``.

    Raises
    ------
    ShoalError
        For an invalid swarm or argument, e.g. ``sim.executor`` (an unknown executor)
        or ``sim.bwrap`` (bubblewrap is missing or does not work here).
    """
    if max_iterations is not None and (not isinstance(max_iterations, int) or max_iterations < 1):
        raise ShoalError(
            f"max_iterations={max_iterations!r} is not an int >= 1",
            code="sim.max_iterations",
            hint="pass a positive int",
        )
    if normalize_executor(executor) == "bwrap":
        check_bwrap()  # before any partitioning work: say at once what is missing
    compiled = compile_swarm(swarm)
    plan = compiled.plan
    if max_iterations is not None:
        plan = plan.model_copy(
            update={"limits": plan.limits.model_copy(update={"max_iterations": max_iterations})}
        )
    cleanup = run_dir is None
    root = Path(tempfile.mkdtemp(prefix="shoal-sim-")) if run_dir is None else Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()  # workers may run elsewhere (a sandbox): paths must be absolute
    node_list = build_nodes(
        nodes,
        datasets,
        partition,
        seed,
        root / "data",
        Path(nodes_dir) if nodes_dir is not None else None,
    )
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
        workers=workers or min(default_workers(), len(node_list)),
        seed=seed,
        progress=progress,
        cleanup=cleanup,
        keep_results=keep_results,
    )
    return sim.run()


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
