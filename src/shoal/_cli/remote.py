"""Commands that talk to a coordinator: deploy, status, logs, results, stop, nodes."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shoal._api.records import LogRecord, SwarmStatus
from shoal._cli.app import app, err, fail
from shoal._cli.headline import Headline, MetricsPoll
from shoal._cli.render import (
    DESCRIPTION,
    nodes_table,
    progress_line,
    show,
    status_view,
    swarms_table,
    write_values,
)
from shoal._cli.tracking import open_trackers
from shoal._errors import ShoalError

if TYPE_CHECKING:
    from shoal._client import Client
    from shoal._metrics.track import Tracker

out = Console()

Coordinator = Annotated[
    list[str] | None,
    typer.Option(
        "--coordinator",
        help="Coordinator URL (default: --profile, else $SHOAL_COORDINATOR, else the profile "
        "`shoal up` wrote in this folder, else ~/.config/shoal/config.toml). Several "
        "coordinators (an active one and standbys): repeat it or separate URLs by commas; "
        "commands move on to the active one by themselves.",
        show_default=False,
    ),
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="Take URL and token from ~/.config/shoal/profiles/NAME.toml (`shoal up` writes "
        "'local'; default: $SHOAL_PROFILE).",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="User API token (default: $SHOAL_TOKEN, else the config file).",
        show_default=False,
    ),
]


@contextmanager
def connected(
    coordinator: str | list[str] | None, token: str | None, profile: str | None = None
) -> Iterator[Client]:
    """A client for the command; every ShoalError becomes one readable paragraph.
    ``coordinator``: one URL, or several (a list, or comma-separated)."""
    from shoal._client import Client  # httpx: only for the commands that need it
    from shoal._client.config import ca_from_config, resolve

    if isinstance(coordinator, list):
        coordinator = ",".join(coordinator) or None
    try:
        url, secret = resolve(coordinator, token, profile)
        ca = ca_from_config(profile) if url.startswith("https://") else None
        with Client(url, secret, verify=ca or True) as client:
            yield client
    except ShoalError as e:
        fail(e)


class _Latest:
    """The live display of ``follow``: the latest status and headline metrics, drawn
    at each refresh (the running instances age between two statuses)."""

    def __init__(self, headline: Headline) -> None:
        self.status: SwarmStatus | None = None
        self.headline = headline

    def __rich__(self) -> RenderableType:
        if self.status is None:
            return Text("")
        shown = status_view(self.status, tracebacks=False)
        view = self.headline.view()
        return shown if view is None else Group(shown, view)


def follow(
    client: Client,
    swarm_id: str,
    timeout: float | None,
    console: Console,
    trackers: Sequence[Tracker] = (),
) -> str:
    """Show a swarm's status as it changes until it finishes; return the final status.

    A terminal gets a live display; a pipe gets one line per change. Under the status,
    the headline metrics (``shoal._cli.headline``) as they arrive; ``trackers`` get
    every new metric value too.
    """
    last: SwarmStatus | None = None
    headline = Headline()
    metrics = MetricsPoll(client, swarm_id)

    def new_metrics(st: SwarmStatus) -> None:
        new = metrics.poll(force=st.finished)
        headline.add(new)
        for t in trackers:
            t.add(new)

    try:
        if console.is_terminal:
            latest = _Latest(headline)  # drawn every second: the running instances age
            with Live(latest, console=console, refresh_per_second=1, transient=True) as live:
                for st in client.watch(swarm_id, timeout=timeout):
                    last = latest.status = st
                    new_metrics(st)
                    live.refresh()
        else:
            # One line per iteration, status change or new failure: a log, not a film.
            shown: tuple[Any, ...] | None = None
            said: str | None = None
            for st in client.watch(swarm_id, timeout=timeout):
                last = st
                new_metrics(st)
                key = (st.status, st.iteration, len(st.failures))
                if key != shown:
                    shown = key
                    console.print(progress_line(st), highlight=False, markup=False)
                line = headline.line()
                if line is not None and line != said:
                    said = line
                    console.print(line, highlight=False, markup=False)
                console.file.flush()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if last is None:  # pragma: no cover - watch always yields the current status
        last = client.status(swarm_id)
    for t in trackers:
        t.close(last.status)
    console.print(status_view(last), highlight=False, crop=False)
    view = headline.view()
    if view is not None:
        console.print(view)
    return last.status


@app.command()
def deploy(
    target: Annotated[
        str,
        typer.Argument(help="path/to/swarm.py[:ClassName], or a job folder (export_job's)"),
    ],
    coordinator: Coordinator = None,
    token: Token = None,
    seed: Annotated[int, typer.Option(help="Seed of the coordinator's random placement.")] = 0,
    task_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds: the timeout of tasks declared without one (default 600).",
            show_default=False,
        ),
    ] = None,
    profile: Profile = None,
) -> None:
    """Compile a swarm (or an exported FedJob) and submit it to a coordinator; print its
    id (only) on stdout."""
    from shoal.job._deploy import deploy_job, find_job

    try:
        job = find_job(target)
    except ShoalError as e:
        fail(e)
    with connected(coordinator, token, profile) as client:
        if job is not None:  # a job runs on the nodes server, site-1..site-N
            swarm_id = deploy_job(client, job, seed=seed, task_timeout=task_timeout)
        else:
            swarm_id = client.deploy(target, seed=seed, task_timeout=task_timeout)
    typer.echo(swarm_id)
    err.print(
        f"deployed {target} as swarm {swarm_id}; follow it with: shoal status {swarm_id} --watch",
        style="dim",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@app.command()
def status(
    swarm: Annotated[
        str | None, typer.Argument(help="A swarm id; without it, list every swarm.")
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", "-w", help="Follow the swarm until it finishes; exit 0 if it succeeded."
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(help="With --watch: give up after this many seconds.", show_default=False),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            help="With --watch: stream metrics to tensorboard:DIR or mlflow:URI (repeatable).",
            show_default=False,
        ),
    ] = None,
    coordinator: Coordinator = None,
    token: Token = None,
    profile: Profile = None,
) -> None:
    """Show every swarm, or one swarm with its task counts and failures (node, traceback)
    and the latest value of its metrics."""
    if watch and swarm is None:
        fail("--watch needs a swarm id: shoal status SWARM --watch")
    if track and not watch:
        fail("--track streams metrics while following a swarm: add --watch")
    with connected(coordinator, token, profile) as client:
        if swarm is None:
            swarms = client.swarms()
            if not swarms:
                err.print("no swarms yet; deploy one with: shoal deploy path/to/swarm.py")
                return
            out.print(swarms_table(swarms))
            return
        if not watch:
            out.print(status_view(client.status(swarm)), highlight=False, crop=False)
            latest = Headline()
            latest.add(client.metrics(swarm, frame=False))
            view = latest.view()
            if view is not None:
                out.print(view)
            return
        trackers = open_trackers(track or [], client.status(swarm).name, swarm)
        final = follow(client, swarm, timeout, out, trackers)
    if final != "succeeded":
        raise typer.Exit(1)


@app.command()
def stop(
    swarm: Annotated[str, typer.Argument(help="The swarm id.")],
    coordinator: Coordinator = None,
    token: Token = None,
    profile: Profile = None,
) -> None:
    """Stop a swarm: its running instances are cancelled."""
    with connected(coordinator, token, profile) as client:
        client.stop(swarm)
    out.print(f"stop requested for swarm {swarm}", highlight=False)


@app.command()
def nodes(coordinator: Coordinator = None, token: Token = None, profile: Profile = None) -> None:
    """List the nodes the coordinator knows, connected or not."""
    with connected(coordinator, token, profile) as client:
        found = client.nodes()
    if not found:
        err.print("no nodes have joined yet; start one with: shoal node start --config node.toml")
        return
    out.print(nodes_table(found))


@app.command()
def results(
    swarm: Annotated[str, typer.Argument(help="The swarm id.")],
    tag: Annotated[str, typer.Argument(help="The tag given to world.results.add(tag, value).")],
    iteration: Annotated[
        int | None,
        typer.Option(help="This iteration (default: the last started).", show_default=False),
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Only results of this task.", show_default=False)
    ] = None,
    all_iterations: Annotated[
        bool,
        typer.Option(
            "--all-iterations",
            help="Every iteration whose results the coordinator keeps, oldest first.",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write {node: value}: .json if JSON data, else .npz for arrays, else "
            "the codec's .msgpack.",
            show_default=False,
        ),
    ] = None,
    coordinator: Coordinator = None,
    token: Token = None,
    profile: Profile = None,
) -> None:
    """Show the results a swarm's tasks stored under TAG, one per node (and iteration)."""
    if all_iterations and iteration is not None:
        fail("give --iteration N or --all-iterations, not both")
    with connected(coordinator, token, profile) as client:
        if all_iterations:
            last = client.status(swarm).iteration
            records = [
                r
                for it in range(last + 1)
                for r in client.result_records(swarm, tag, alias=alias, iteration=it)
            ]
        else:
            records = client.result_records(swarm, tag, alias=alias, iteration=iteration)
    if not records:
        where = (
            "any iteration"
            if all_iterations
            else f"iteration {iteration}"
            if iteration is not None
            else "the last iteration"
        )
        fail(
            f"swarm {swarm} has no results tagged {tag!r} in {where}"
            + (f" from task {alias!r}" if alias else "")
            + " (check the tag, --alias and --iteration)",
            1,
        )
    t = Table(title=f"results {tag!r} of swarm {swarm}", show_edge=False)
    for col in ("node", "task", "iteration"):
        t.add_column(col, no_wrap=True)
    t.add_column("value")
    for r in records:
        t.add_row(r.node_id, r.alias, str(r.iteration), Text(show(r.value)))
    out.print(t)
    if output is None:
        return
    # Keys are node ids; ALIAS/NODE when several tasks stored the tag; ITERATION/...
    # with --all-iterations.
    several = len({r.alias for r in records}) > 1
    values = {
        (f"{r.iteration}/" if all_iterations else "")
        + (f"{r.alias}/{r.node_id}" if several else r.node_id): r.value
        for r in records
    }
    path, fmt, why = write_values(values, output)
    err.print(
        f"wrote {len(values)} value(s) to {path} as {DESCRIPTION[fmt]}"
        + (f" ({why})" if why else ""),
        highlight=False,
    )


@app.command()
def logs(
    target: Annotated[
        str, typer.Argument(help="A swarm id on the coordinator, or a simulation's run folder.")
    ],
    node: Annotated[str | None, typer.Option(help="Only this node.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task (alias).")] = None,
    level: Annotated[
        str | None,
        typer.Option(help="Only this level and above: debug < info < warning < error."),
    ] = None,
    iteration: Annotated[int | None, typer.Option(help="Only this iteration.")] = None,
    follow_: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing new records until the swarm finishes."),
    ] = False,
    coordinator: Coordinator = None,
    token: Token = None,
    profile: Profile = None,
) -> None:
    """Show a swarm's logs, or the logs a simulation saved in its run folder.

    Filtered by node, task, level (a minimum: ``--level warning`` shows warnings and
    errors) and iteration. TARGET is a run folder if it is an existing folder or a path
    (it holds a ``/``), else a swarm id on the coordinator. An unknown node or task is
    an error that lists the known ones.
    """
    levels = _levels_from(level)
    run_dir = Path(target)
    if run_dir.is_dir():
        if follow_:
            fail("--follow needs a swarm on a coordinator; a run folder's logs are complete")
        _local_logs(run_dir, node, task, levels, iteration)
        return
    if "/" in target or target.startswith("."):  # swarm ids are plain names
        fail(f"run folder {target} does not exist; give the folder `shoal simulate` printed")
    with connected(coordinator, token, profile) as client:
        if task is not None or node is not None:
            status = client.status(target)
            _known("task", task, list(status.tasks), f"swarm {target}")
            if node is not None:
                _known("node", node, [n.node_id for n in client.nodes()], "the coordinator")
        # The coordinator matches one level: ask for all of them (the minimum is
        # applied here), or for the one level when only "error" and above is wanted.
        one = levels[0] if len(levels) == 1 else None
        try:
            if follow_:
                for r in client.follow_logs(target, node, task, one, iteration):
                    if r.level in levels or levels == ALL_LEVELS:
                        _print_log(r)
                return
            after = 0
            while True:
                page = client.logs(target, node, task, one, iteration, after=after)
                for r in page:
                    if r.level in levels or levels == ALL_LEVELS:
                        _print_log(r)
                if not page or page[-1].seq <= after:
                    break
                after = page[-1].seq
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


#: Log levels, lowest first (``shoal.runtime.Logger`` writes these).
ALL_LEVELS = ("debug", "info", "warning", "error")


def _levels_from(level: str | None) -> tuple[str, ...]:
    """The levels at or above ``level`` (every level without one)."""
    if level is None:
        return ALL_LEVELS
    if level not in ALL_LEVELS:
        fail(f"--level {level!r} is not a log level; use one of {', '.join(ALL_LEVELS)}")
    return ALL_LEVELS[ALL_LEVELS.index(level) :]


def _known(what: str, given: str | None, known: list[str], where: str) -> None:
    """Fail naming ``given`` and the known ones if it is not among them."""
    if given is None or given in known:
        return
    close = difflib.get_close_matches(given, known, n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
    fail(f"{what} {given!r} is unknown in {where}{maybe}; known {what}s: {shown or 'none'}")


@app.command()
def story(
    instance: Annotated[str, typer.Argument(help="An instance id (from a failure or a log).")],
    run: Annotated[
        Path | None,
        typer.Option(help="A simulation's run folder (it keeps failed instances' stories)."),
    ] = None,
    coordinator: Coordinator = None,
    token: Token = None,
    profile: Profile = None,
) -> None:
    """Tell what happened to one instance: each transition and engine decision, with the
    time and the id of the event that caused it."""
    if run is not None:
        path = run / "stories.json"
        if not path.is_file():
            fail(f"{run} holds no stories.json; give the run folder `shoal simulate` printed")
        stories = json.loads(path.read_text())
        if instance not in stories:
            fail(
                f"{run} keeps the stories of its failed instances only, and {instance!r} is "
                "not one; from Python, SimulationRun.story(instance_id) tells any instance's"
            )
        lines = stories[instance]
    else:
        with connected(coordinator, token, profile) as client:
            lines = client.story(instance)
    for line in lines:
        out.print(line, highlight=False, markup=False)


def _local_logs(
    run_dir: Path,
    node: str | None,
    task: str | None,
    levels: tuple[str, ...],
    iteration: int | None,
) -> None:
    path = run_dir / "logs.jsonl"
    if not path.is_file():
        fail(f"{run_dir} holds no logs.jsonl; give the run folder `shoal simulate` printed")
    names = [f.name for f in dataclasses.fields(LogRecord)]
    with open(path, encoding="utf-8") as f:
        records = [
            LogRecord(**{k: v for k, v in json.loads(line).items() if k in names}) for line in f
        ]
    if node is not None or task is not None:
        # The run's tasks and nodes (summary.json); from its logs for an older run folder.
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            summary = {}
        tasks = summary.get("tasks") or sorted({r.alias for r in records})
        nodes = summary.get("nodes") or sorted({r.node_id for r in records})
        _known("task", task, tasks, f"run {run_dir}")
        _known("node", node, nodes, f"run {run_dir}")
    for r in records:
        if (
            (node and r.node_id != node)
            or (task and r.alias != task)
            or r.level not in levels
            or (iteration is not None and r.iteration != iteration)
        ):
            continue
        _print_log(r)


def _print_log(r: LogRecord) -> None:
    out.print(
        Text.assemble(
            (f"it {r.iteration}", "dim"),
            f" {r.level:<7} {r.node_id} {r.alias}: {r.message}",
        ),
        highlight=False,
        soft_wrap=True,
    )
