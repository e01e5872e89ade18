"""Metric records as tidy rows and per-iteration aggregates.

The aggregate of a metric in an iteration is taken over the *last* value each
(task, node) logged under that name in that iteration (a task that logs a loss per
epoch counts once, with its final value): its mean, min and max, and how many values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal._api.records import MetricRecord
from shoal._errors import ShoalError

#: The columns of a tidy metrics table, in order.
COLUMNS = ("swarm", "iteration", "node", "task", "name", "value", "step", "time")


def rows(records: Iterable[MetricRecord], swarm: str) -> list[dict[str, Any]]:
    """One dict per value, with the keys of :data:`COLUMNS`."""
    return [
        {
            "swarm": swarm,
            "iteration": r.iteration,
            "node": r.node_id,
            "task": r.alias,
            "name": r.name,
            "value": r.value,
            "step": r.step,
            "time": r.time,
        }
        for r in records
    ]


def frame_or_records(records: list[MetricRecord], swarm: str, frame: bool | None) -> Any:
    """A pandas DataFrame of :data:`COLUMNS` (``frame`` None: when pandas is
    installed), else the records themselves.

    Raises
    ------
    ShoalError
        ``metrics.pandas`` when ``frame=True`` and pandas is not installed.
    """
    if frame is False:
        return records
    try:
        import pandas as pd
    except ImportError:
        if frame:
            raise ShoalError(
                "metrics(frame=True) needs pandas, which is not installed",
                code="metrics.pandas",
                hint="pip install pandas (or shoal[examples]), or pass frame=False for records",
            ) from None
        return records
    return pd.DataFrame(rows(records, swarm), columns=list(COLUMNS))


@dataclass(frozen=True)
class IterationValue:
    """One metric's values in one iteration.

    Attributes
    ----------
    values
        ``{key: value}``: the last value of each node (the key is the node id, or
        ``task/node`` when several tasks log the metric).
    """

    iteration: int
    mean: float
    min: float
    max: float
    count: int
    values: dict[str, float] = field(default_factory=dict)


def names(records: Iterable[MetricRecord]) -> list[str]:
    """Metric names in the order they first appear."""
    return list(dict.fromkeys(r.name for r in records))


def by_iteration(records: Sequence[MetricRecord], name: str) -> list[IterationValue]:
    """The values of metric ``name`` per iteration, oldest first."""
    mine = [r for r in records if r.name == name]
    several = len({r.alias for r in mine}) > 1
    last: dict[int, dict[str, float]] = {}
    for r in mine:  # records are in the order they were stored: the last one wins
        key = f"{r.alias}/{r.node_id}" if several else r.node_id
        last.setdefault(r.iteration, {})[key] = r.value
    out = []
    for it in sorted(last):
        values = last[it]
        v = list(values.values())
        out.append(IterationValue(it, sum(v) / len(v), min(v), max(v), len(v), values))
    return out


def headline(records: Sequence[MetricRecord]) -> list[tuple[str, list[IterationValue]]]:
    """Every metric name (in order of first appearance) with its values per iteration:
    the last item of each list is the metric's latest aggregate."""
    return [(n, by_iteration(records, n)) for n in names(records)]
