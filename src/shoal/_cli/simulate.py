"""``shoal simulate``: run a swarm on virtual nodes (``shoal logs`` reads its logs)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import shoal
from shoal._cli.app import app, fail
from shoal._cli.headline import Headline, HeadlineProgress
from shoal._cli.render import Running, running_view, show
from shoal._cli.tracking import close_trackers, open_trackers
from shoal._cli.ui import serve_until_interrupted, start_dashboard
from shoal._errors import ShoalError
from shoal._ui.folder import write_instances, write_live, write_plan

if TYPE_CHECKING:
    from shoal._ui.serve import FolderServer

out = Console()
err = Console(stderr=True)


def _datasets(items: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            fail(f"--dataset {item!r} is not NAME=PATH (e.g. --dataset digits=data/digits.npz)")
        result[name] = path
    return result


def _profiles(items: list[str]) -> list[shoal.NodeProfile]:
    """``--node-profile`` values: a nodes file path, or an inline KEY=VALUE list."""
    out: list[shoal.NodeProfile] = []
    for item in items:
        if "=" not in item and Path(item).exists():
            out += shoal.NodeProfile.load(item)
        elif "=" in item:
            out.append(shoal.NodeProfile.parse(item))
        else:
            fail(f"--node-profile {item!r} is neither a nodes file nor KEY=VALUE,...")
    return out


@app.command()
def simulate(
    target: Annotated[str, typer.Argument(help="path/to/swarm.py[:ClassName]")],
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="Number of virtual nodes.")] = 10,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", "-d", help="NAME=PATH, repeatable.")
    ] = None,
    partition: Annotated[
        str | None, typer.Option(help="Split datasets: iid | dirichlet:ALPHA | shards:K.")
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(help="The label column a table is split by (default: label/target/y/class)."),
    ] = None,
    nodes_dir: Annotated[
        Path | None, typer.Option(help="One subfolder per node holding that node's files.")
    ] = None,
    node_profile: Annotated[
        list[str] | None,
        typer.Option(
            help="A kind of node, repeatable: a TOML nodes file ([[nodes]] tables) or "
            'KEY=VALUE,... e.g. "count=10,gpus=1,memory=64Gi,gpu_memory=24Gi" (keys: count, '
            "name, cpu, memory, gpus, gpu_memory, images (a+b), cpu_usage, memory_usage, "
            "rtt_ms, loss). Replaces --nodes.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for placement and partitioning.")] = 0,
    max_iterations: Annotated[int | None, typer.Option(help="Override max_iterations.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: cores).")] = None,
    executor: Annotated[
        str,
        typer.Option(
            help="process (a worker pool; alias: processes) | bwrap (the pool, each "
            "worker sandboxed by bubblewrap: read-only data, no network) | inline."
        ),
    ] = "process",
    backend: Annotated[
        str,
        typer.Option(
            help="local (worker processes on this machine) | ray (the workers are Ray "
            "actors across a Ray cluster; pip install 'shoal[ray]'; docs/scale.md)."
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="With --backend ray: auto (the cluster `ray start` runs on this machine) "
            "or HOST:PORT of its head. Default: start a local Ray.",
            show_default=False,
        ),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where to keep logs and data (default .shoal/runs/...).")
    ] = None,
    keep_results: Annotated[
        int, typer.Option(help="Past iterations whose results are kept (-1: all).")
    ] = 2,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write status, globals, metrics as JSON.")
    ] = None,
    task_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds: the timeout of tasks declared without one (default 600).",
            show_default=False,
        ),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            help="Stream metrics to tensorboard:DIR or mlflow:URI (repeatable).",
            show_default=False,
        ),
    ] = None,
    ui: Annotated[
        bool,
        typer.Option("--ui", help="Serve the dashboard of this run, live, until Ctrl-C."),
    ] = False,
    ui_port: Annotated[int, typer.Option(help="The dashboard's port with --ui.")] = 8765,
) -> None:
    """Run a swarm on virtual nodes on this machine."""
    from shoal._define.loader import load_swarm

    run_dir = run_dir or Path(".shoal") / "runs" / time.strftime("%Y%m%d-%H%M%S")
    if address is not None and backend != "ray":
        fail("--address is the Ray cluster's: it needs --backend ray")
    try:
        swarm, _ = load_swarm(target)
        fleet = _profiles(node_profile or [])
    except ShoalError as e:
        fail(e)
    headline = Headline()
    trackers = open_trackers(track or [], type(swarm).__name__, run_dir.name)
    bar = HeadlineProgress(
        TextColumn("iteration {task.fields[iteration]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("instances"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
        headline=headline,
    )
    task_id = bar.add_task("run", total=None, iteration=0)
    running = _RunningNow()

    server = None
    if ui:
        server = _live_dashboard(swarm, run_dir, ui_port)

    def progress(what: str, iteration: int, done: int, scheduled: int) -> None:
        bar.update(task_id, completed=done, total=scheduled, iteration=iteration)
        if server is not None:
            write_live(
                run_dir,
                {"status": "running", "iteration": iteration, "done": done, "scheduled": scheduled},
            )

    def on_metrics(records: list[shoal.MetricRecord]) -> None:
        headline.add(records)
        for t in trackers:
            t.add(records)

    # 600 s: the engine's DEFAULT_TASK_TIMEOUT_S (the CLI does not import the engine;
    # tests/cli/test_simulate_first_hour.py checks that the two agree).
    default = "600s" if task_timeout is None else f"{task_timeout:g}s"
    out.print(
        f"[dim]tasks declared without a timeout time out after {default} (--task-timeout)[/]",
        highlight=False,
    )
    try:
        with Live(Group(bar, running), console=out, refresh_per_second=4, transient=False):
            try:
                run = shoal.simulate(
                    swarm,
                    nodes=fleet or nodes,
                    datasets=_datasets(dataset or []),
                    partition=f"{partition},label={label}" if partition and label else partition,
                    seed=seed,
                    executor=executor,
                    workers=workers,
                    max_iterations=max_iterations,
                    nodes_dir=nodes_dir,
                    run_dir=run_dir,
                    progress=progress,
                    keep_results=None if keep_results < 0 else keep_results,
                    task_timeout=task_timeout,
                    watch=running.update,
                    on_metrics=on_metrics,
                    raise_on_failure=False,  # printed below, then exit 1
                    backend=backend,
                    ray_address=address,
                )
            finally:
                running.update([])  # the final display shows no stale instances
    except ShoalError as e:
        close_trackers(trackers, "failed")
        if server is not None:
            server.stop()
        fail(e)
    except KeyboardInterrupt as e:
        # The first Ctrl-C stops the run cleanly and hands back the stopped run; keep
        # what it did (logs, metrics, summary), so that `shoal logs` reads it.
        stopped: shoal.SimulationRun | None = getattr(e, "run", None)
        if server is not None:
            server.stop()
        if stopped is None:  # a second Ctrl-C: nothing could be kept
            err.print("interrupted", style="yellow")
            raise typer.Exit(130) from None
        close_trackers(trackers, stopped.status)
        _save_logs(stopped, run_dir)
        _summary(stopped)
        if json_out is not None:
            json_out.write_text(json.dumps(stopped.summary(), indent=2, default=str) + "\n")
        out.print(f"logs: shoal logs {run_dir}")
        raise typer.Exit(130) from None
    close_trackers(trackers, run.status)
    # From the run's plan: compiling the swarm a second time just for this note was waste.
    images = sorted({m.image for m in run.plan.modules.values()})
    if images != ["python"]:
        out.print(
            f"[dim]note: module images {images} are recorded but not enforced by the "
            f"{executor} executor; every task ran with this Python.[/]"
        )
    _save_logs(run, run_dir)
    _summary(run)
    if json_out is not None:
        json_out.write_text(json.dumps(run.summary(), indent=2, default=str) + "\n")
    out.print(f"logs: shoal logs {run_dir}")
    if server is not None:
        out.print("the dashboard shows the finished run; Ctrl-C stops it.")
        serve_until_interrupted(server)
    if not run.ok:
        raise typer.Exit(1)


class _RunningNow:
    """The live display's list of running instances (task, node, age)."""

    def __init__(self) -> None:
        self._running: Sequence[Running] = []

    def update(self, running: Sequence[Running]) -> None:
        self._running = running

    def __rich__(self) -> RenderableType:
        return running_view(self._running)


def _live_dashboard(swarm: shoal.Swarm, run_dir: Path, port: int) -> FolderServer:
    """Write the plan and serve the run folder's dashboard while the run goes on."""
    from shoal._define.compile import compile_swarm

    try:
        write_plan(run_dir, compile_swarm(swarm).plan)
    except ShoalError as e:
        fail(e)
    write_live(run_dir, {"status": "running", "iteration": 0, "done": 0, "scheduled": 0})
    return start_dashboard([run_dir], "127.0.0.1", port, auth=True)


def _save_logs(run: shoal.SimulationRun, run_dir: Path) -> None:
    with open(run_dir / "logs.jsonl", "w", encoding="utf-8") as f:
        for r in run.logs():
            f.write(json.dumps(r.to_dict()) + "\n")
    with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as f:  # `shoal metrics`
        for m in run.metrics(frame=False):
            f.write(json.dumps(m.to_dict()) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(run.summary(), indent=2, default=str))
    # What happened to each failed instance (`shoal story ID --run RUN_DIR`).
    stories = {f.instance_id: run.story(f.instance_id) for f in run.failures}
    (run_dir / "stories.json").write_text(json.dumps(stories, indent=1))
    # For the dashboard (`shoal ui RUN_DIR`): the graph and every instance's row.
    write_plan(run_dir, run.plan)
    write_instances(run_dir, run.swarm_id, run.plan, run.iterations, run.story)
    (run_dir / "live.json").unlink(missing_ok=True)


def _summary(run: shoal.SimulationRun) -> None:
    color = {"succeeded": "green", "failed": "red"}.get(run.status, "yellow")
    out.print(
        f"[bold {color}]{run.status}[/] after {run.iterations} iteration(s) in "
        f"{run.wall_s:.2f}s: {run.reason}",
        highlight=False,
    )
    t = Table(title="tasks", show_edge=False)
    for col in ("task", "module", "instances", "mean s", "max s", "total s"):
        t.add_column(col, justify="left" if col in ("task", "module") else "right")
    for tm in run.timings:
        t.add_row(
            tm.alias,
            tm.module + (f" {tm.version}" if tm.version else ""),
            str(tm.instances),
            f"{tm.mean_s:.4f}",
            f"{tm.max_s:.4f}",
            f"{tm.total_s:.2f}",
        )
    out.print(t)
    for f in run.failures:
        out.print(
            f"[bold red]failed[/] {f.alias} on node {f.node_id} "
            f"(iteration {f.iteration}, attempt {f.attempt}, {f.kind}): {f.error}",
            highlight=False,
        )
        if f.traceback:
            out.print(f.traceback.rstrip(), highlight=False, markup=False)
        story = f"  its story: shoal story {f.instance_id} --run {run.run_dir}"
        out.print(story, highlight=False, soft_wrap=True)  # one line, to copy whole
    if run.ok:
        sinks = set(run.plan.sinks)
        g = Table(title="globals", show_edge=False)
        g.add_column("key")
        g.add_column("value")
        for key in run.globals:
            g.add_row(key, show(run.globals[key]))
        out.print(g)
        rt = Table(title="results of the sink tasks (last iteration)", show_edge=False)
        for col in ("task", "tag", "nodes", "value"):
            rt.add_column(col)
        for alias in run.plan.sinks:
            for tag in run.results.tags(alias):
                values = run.results.select(tag, alias=alias)
                first = next(iter(values.values()))
                rt.add_row(alias, tag, str(len(values)), show(first))
        if rt.row_count:
            out.print(rt)
        last: dict[tuple[str, str], float] = {}
        for m in run.metrics(frame=False):
            if m.alias in sinks or not sinks:
                last[(m.alias, m.name)] = m.value
        if last:
            mt = Table(title="last metrics of the sink tasks", show_edge=False)
            for col in ("task", "metric", "value"):
                mt.add_column(col)
            for (alias, name), value in sorted(last.items()):
                mt.add_row(alias, name, f"{value:.6g}")
            out.print(mt)
