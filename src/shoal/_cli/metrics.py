"""``shoal metrics RUN_OR_SWARM [NAME]``: a metric per iteration as a table and a
terminal chart, from a simulation's run folder or a swarm on a coordinator."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shoal._api.records import MetricRecord
from shoal._cli.app import app, err, fail
from shoal._cli.chart import line_chart
from shoal._cli.remote import Coordinator, Profile, Token, connected
from shoal._metrics.table import COLUMNS, by_iteration, names, rows

out = Console()

#: Charts drawn when no NAME is given (one per metric, in order of first appearance).
MAX_CHARTS = 3


def run_folder_metrics(run_dir: Path) -> tuple[str, list[MetricRecord]]:
    """The swarm name and metric records a simulation saved in its run folder."""
    summary = run_dir / "summary.json"
    if not summary.is_file():
        fail(f"{run_dir} holds no summary.json; give the run folder `shoal simulate` printed")
    doc = json.loads(summary.read_text(encoding="utf-8"))
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        fields = [f.name for f in dataclasses.fields(MetricRecord)]
        with open(path, encoding="utf-8") as f:
            records = [
                MetricRecord(**{k: v for k, v in json.loads(line).items() if k in fields})
                for line in f
                if line.strip()
            ]
    else:  # a run folder from before metrics.jsonl: the summary has every value too
        records = [
            MetricRecord(m["name"], m["value"], m["step"], m["node"], m["task"], m["iteration"], 0)
            for m in doc.get("metrics", [])
        ]
    return str(doc.get("swarm", run_dir.name)), records


def _write(path: Path, swarm: str, records: list[MetricRecord]) -> None:
    table = rows(records, swarm)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS))
            w.writeheader()
            w.writerows(table)
    err.print(f"wrote {len(table)} value(s) to {path} ({', '.join(COLUMNS)})", highlight=False)


def _one(records: list[MetricRecord], name: str, chart: bool) -> None:
    series = by_iteration(records, name)
    t = Table(title=f"{name} per iteration (last value of each node)", show_edge=False)
    for col in ("iteration", "nodes", "mean", "min", "max"):
        t.add_column(col, justify="right")
    for s in series:
        t.add_row(str(s.iteration), str(s.count), f"{s.mean:.6g}", f"{s.min:.6g}", f"{s.max:.6g}")
    out.print(t)
    if chart:
        pts = [
            (label, [(float(s.iteration), getattr(s, label)) for s in series])
            for label in ("min", "max", "mean")
        ]
        out.print(line_chart(pts, title=name, width=min(72, max(24, out.width - 16))))


def _all(records: list[MetricRecord], chart: bool) -> None:
    found = names(records)
    series = {n: {s.iteration: s for s in by_iteration(records, n)} for n in found}
    t = Table(title="mean over nodes per iteration", show_edge=False)
    t.add_column("iteration", justify="right")
    for n in found:
        t.add_column(n, justify="right")
    for it in sorted({it for s in series.values() for it in s}):
        t.add_row(str(it), *(f"{series[n][it].mean:.6g}" if it in series[n] else "" for n in found))
    out.print(t)
    if not chart:
        return
    for n in found[:MAX_CHARTS]:
        pts = [("mean", [(float(it), s.mean) for it, s in sorted(series[n].items())])]
        out.print(line_chart(pts, title=n, width=min(72, max(24, out.width - 16)), height=8))
    if len(found) > MAX_CHARTS:
        out.print(f"[dim]{len(found) - MAX_CHARTS} more: shoal metrics TARGET NAME for one[/]")


@app.command()
def metrics(
    target: Annotated[
        str, typer.Argument(help="A simulation's run folder, or a swarm id on the coordinator.")
    ],
    name: Annotated[
        str | None, typer.Argument(help="One metric (default: every metric's mean).")
    ] = None,
    node: Annotated[str | None, typer.Option(help="Only this node.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this task (alias).")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write every value as a tidy table (swarm, iteration, node, task, name, "
            "value, step, time): .csv or .json.",
            show_default=False,
        ),
    ] = None,
    chart: Annotated[
        bool, typer.Option("--chart/--no-chart", help="Draw the curve in the terminal.")
    ] = True,
    coordinator: Coordinator = None,
    token: Token = None,
    profile: Profile = None,
) -> None:
    """Show a swarm's metrics per iteration: a table and a chart (mean, min and max over
    the nodes' last value in each iteration)."""
    if output is not None and output.suffix.lower() not in (".csv", ".json"):
        fail(f"--output {output}: give a .csv or .json file")
    run_dir = Path(target)
    if run_dir.is_dir():
        swarm, every = run_folder_metrics(run_dir)
    elif "/" in target or target.startswith("."):
        fail(f"run folder {target} does not exist; give the folder `shoal simulate` printed")
    else:
        swarm = target
        with connected(coordinator, token, profile) as client:
            every = client.metrics(target, frame=False)
    records = [
        r
        for r in every
        if (name is None or r.name == name)
        and (node is None or r.node_id == node)
        and (task is None or r.alias == task)
    ]
    if not records:
        known = ", ".join(names(every)) or "none"
        fail(
            f"{target} has no metric values"
            + (f" of {name!r}" if name is not None else "")
            + (" for that --node/--task" if node or task else "")
            + f" (metrics logged: {known})",
            1,
        )
    if name is None:
        _all(records, chart)
    else:
        _one(records, name, chart)
    if output is not None:
        _write(output, swarm, records)
