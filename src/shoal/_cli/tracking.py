"""``--track tensorboard:DIR|mlflow:URI`` for the commands that follow a swarm."""

from __future__ import annotations

from shoal._cli.app import err, fail
from shoal._errors import ShoalError
from shoal._metrics.track import Tracker, open_tracker


def open_trackers(specs: list[str], swarm: str, run: str) -> list[Tracker]:
    """Open every ``--track`` given (before anything runs: a typo costs no waiting)."""
    trackers = []
    try:
        for spec in specs:
            trackers.append(open_tracker(spec, swarm, run))
    except ShoalError as e:
        close_trackers(trackers, "stopped")
        fail(e)
    for t in trackers:
        err.print(f"tracking metrics in {t.where}", highlight=False, soft_wrap=True)
    return trackers


def close_trackers(trackers: list[Tracker], status: str) -> None:
    """Write what is pending and end each tracker's run with the swarm's status."""
    for t in trackers:
        t.close(status)
