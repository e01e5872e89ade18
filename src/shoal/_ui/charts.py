"""Metric values shaped for the charts (uPlot's aligned arrays) and for the tables that
show the same numbers without JavaScript."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from shoal._api.records import MetricRecord


@dataclass(frozen=True)
class Chart:
    """One chart: x values and named lines (None where a line has no point).

    Attributes
    ----------
    title
        What it shows (``accuracy · worker``).
    x
        Iterations.
    lines
        ``(label, values)``; each list is as long as ``x``.
    x_label
        What ``x`` counts (the axis and the values table say it).
    """

    title: str
    x: list[int]
    lines: list[tuple[str, list[float | None]]]
    x_label: str = "iteration"

    def to_dict(self) -> dict[str, object]:
        """The JSON the page's script draws."""
        return {
            "title": self.title,
            "x": self.x,
            "lines": [[n, v] for n, v in self.lines],
            "x_label": self.x_label,
        }


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def per_node(name: str, rows: list[MetricRecord]) -> list[Chart]:
    """For metric ``name``: one chart per task that reported it, one line per node (its
    last value in each iteration) and, when several nodes did, their mean."""
    charts = []
    for alias in sorted({r.alias for r in rows if r.name == name}):
        last: dict[tuple[str, int], float] = {}
        for r in rows:
            if r.name == name and r.alias == alias:
                last[(r.node_id, r.iteration)] = r.value
        x = sorted({it for _, it in last})
        nodes = sorted({n for n, _ in last})
        lines = [(n, [last.get((n, it)) for it in x]) for n in nodes]
        if len(nodes) > 1:
            lines.append(("mean", [_mean(last.get((n, it)) for n in nodes) for it in x]))
        charts.append(Chart(f"{name} · {alias}", x, lines))
    return charts


def across(name: str, runs: list[tuple[str, list[MetricRecord]]]) -> Chart:
    """Metric ``name`` across swarms: one line per swarm, the mean over its nodes (and
    tasks) in each iteration."""
    per: dict[str, dict[int, list[float]]] = {}
    for label, rows in runs:
        for r in rows:
            if r.name == name:
                per.setdefault(label, {}).setdefault(r.iteration, []).append(r.value)
    x = sorted({it for its in per.values() for it in its})
    lines = [(label, [_mean(its.get(it, [])) for it in x]) for label, its in per.items()]
    return Chart(f"{name} across swarms", x, lines)


def heartbeats(beats: list[float]) -> Chart:
    """A node's heartbeat history (epoch seconds, oldest first): for each heartbeat
    after the first, the gap since the one before, in seconds; x counts heartbeats
    back from the newest (0), so a silence shows as a peak."""
    n = len(beats)
    gaps: list[float | None] = [round(b - a, 3) for a, b in pairwise(beats)]
    x = [i - (n - 1) for i in range(1, n)]
    return Chart("seconds since the previous heartbeat", x, [("gap (s)", gaps)], "heartbeat")
