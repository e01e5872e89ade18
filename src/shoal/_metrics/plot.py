"""A metric's curve with matplotlib: one thin line per node and the mean over nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shoal._api.records import MetricRecord
from shoal._errors import ShoalError
from shoal._metrics.table import by_iteration, names

#: Above this many nodes, the per-node lines become one min-max band.
MAX_NODE_LINES = 50


def plot(records: Sequence[MetricRecord], name: str, ax: Any = None, title: str = "") -> Any:
    """Draw metric ``name`` against the iteration on ``ax`` (default: a new figure).

    Per node a thin line (above :data:`MAX_NODE_LINES` nodes, a min-max band instead),
    and the mean over nodes as a thick line labelled ``"mean"``.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (``ax.figure`` is the figure).

    Raises
    ------
    ShoalError
        ``metrics.matplotlib`` when matplotlib is missing; ``metrics.unknown`` when no
        value of ``name`` was logged (the message lists the names that were).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ShoalError(
            "plotting needs matplotlib, which is not installed",
            code="metrics.matplotlib",
            hint="pip install matplotlib (or shoal[plot])",
        ) from None
    series = by_iteration(records, name)
    if not series:
        known = ", ".join(repr(n) for n in names(records)) or "none"
        raise ShoalError(
            f"no values of metric {name!r} were logged (metrics logged: {known})",
            code="metrics.unknown",
            hint="pass one of the logged names",
        )
    if ax is None:
        _, ax = plt.subplots()
    its = [s.iteration for s in series]
    keys = list(dict.fromkeys(k for s in series for k in s.values))
    if len(keys) <= MAX_NODE_LINES:
        for i, key in enumerate(keys):
            pts = [(s.iteration, s.values[key]) for s in series if key in s.values]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                linewidth=0.8,
                alpha=0.4,
                color="tab:gray",
                label="nodes" if i == 0 else "_nolegend_",
                gid=f"node:{key}",
            )
    else:
        lo, hi = [s.min for s in series], [s.max for s in series]
        ax.fill_between(its, lo, hi, alpha=0.25, color="tab:gray", label="min-max over nodes")
    ax.plot(its, [s.mean for s in series], linewidth=2.2, color="tab:blue", label="mean")
    ax.set_xlabel("iteration")
    ax.set_ylabel(name)
    ax.set_title(title or name)
    ax.legend()
    return ax
