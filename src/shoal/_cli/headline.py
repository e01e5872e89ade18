"""The headline metrics of a live swarm: what ``shoal simulate``, ``shoal status
--watch`` and ``shoal up --deploy`` show under the instance counts.

Headline metrics are every metric name the swarm logs (in the order each first
arrived, at most :data:`SHOWN`), each with its latest aggregate: the mean over the
nodes' last values in the newest iteration that has values of it (``shoal._metrics.
table``), the number of nodes and a sparkline of the mean over the iterations so far.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.progress import Progress
from rich.table import Table

from shoal._api.records import MetricRecord
from shoal._metrics.table import headline

if TYPE_CHECKING:
    from shoal._client import Client

#: The most metric names shown (the others are counted in the title).
SHOWN = 8
#: Iterations in a sparkline.
SPARK = 24
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """``values`` as one character each, scaled between their min and max."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    return "".join(_BARS[round((v - lo) / span * 7) if span else 3] for v in values)


class Headline:
    """The latest aggregate of every metric seen so far."""

    def __init__(self) -> None:
        self.records: list[MetricRecord] = []

    def add(self, records: Iterable[MetricRecord]) -> None:
        """Take new metric values (in the order they were stored)."""
        self.records.extend(records)

    def _latest(self) -> list[tuple[str, Any, list[float]]]:
        found = headline(list(self.records))  # a copy: the display may run in a thread
        return [(n, s[-1], [v.mean for v in s[-SPARK:]]) for n, s in found if s]

    def view(self) -> Table | None:
        """A table of the latest values (None before the first value)."""
        latest = self._latest()
        if not latest:
            return None
        more = len(latest) - SHOWN
        title = "metrics (latest iteration; mean over nodes)"
        t = Table(title=title + (f", {more} more" if more > 0 else ""), show_edge=False)
        for col in ("name", "iteration", "mean", "min", "max", "nodes", "trend"):
            t.add_column(col, justify="left" if col in ("name", "trend") else "right")
        for name, last, trend in latest[:SHOWN]:
            t.add_row(
                name,
                str(last.iteration),
                f"{last.mean:.6g}",
                f"{last.min:.6g}",
                f"{last.max:.6g}",
                str(last.count),
                sparkline(trend),
            )
        return t

    def line(self) -> str | None:
        """One line for a stream that is not a terminal (None before the first value)."""
        latest = self._latest()[:SHOWN]
        if not latest:
            return None
        return "metrics: " + ", ".join(
            f"{n} {last.mean:.4g} (iteration {last.iteration}, {last.count} nodes)"
            for n, last, _ in latest
        )


class MetricsPoll:
    """New metric values of a swarm on a coordinator, read at most every ``every``
    seconds (the coordinator returns a swarm's values in the order they were stored,
    so the values past the count already seen are the new ones)."""

    def __init__(self, client: Client, swarm_id: str, every: float = 1.0) -> None:
        self.client, self.swarm_id, self.every = client, swarm_id, every
        self._seen = 0
        self._at = float("-inf")

    def poll(self, force: bool = False) -> list[MetricRecord]:
        """The values stored since the last call (none if called again too soon)."""
        now = time.monotonic()
        if not force and now - self._at < self.every:
            return []
        self._at = now
        every: list[MetricRecord] = self.client.metrics(self.swarm_id, frame=False)
        new, self._seen = every[self._seen :], max(self._seen, len(every))
        return new


class HeadlineProgress(Progress):
    """A rich progress display with the headline metrics under its bars."""

    def __init__(self, *columns: Any, headline: Headline, **kwargs: Any) -> None:
        self.headline = headline  # first: rich renders once while it is made
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Iterable[Any]:
        """The bars, then the metrics table once there are values."""
        yield from super().get_renderables()
        view = self.headline.view()
        if view is not None:
            yield view
