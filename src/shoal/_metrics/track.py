"""Experiment tracking: metric values stream to TensorBoard or MLflow as they arrive.

``--track tensorboard:DIR`` writes TensorBoard event files under ``DIR/<run>`` with
TensorBoard's own writer (``tensorboard.summary.writer``: no TensorFlow, no torch; the
package a user needs to look at the curves anyway). ``--track mlflow:URI`` logs to the
MLflow tracking store at URI (``sqlite:///mlflow.db``, ``http://host:5000``; MLflow 3
refuses its old file store) with the light client ``mlflow-skinny``; the experiment is
the swarm's name and the run is named after the run folder or swarm id.

What each value becomes (the same in both):

- ``NAME``: the mean over nodes of metric NAME in an iteration, at step = iteration,
  written once the iteration is over for that metric (a value of a later iteration
  arrived, or the tracker is closed): the curve to compare runs by.
- ``NAME/TASK/NODE``: every value as logged, at its own step (the iteration unless the
  task gave ``step=``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from shoal._api.records import MetricRecord
from shoal._errors import ShoalError

KINDS = ("tensorboard", "mlflow")
_HOW = "use --track tensorboard:DIR or --track mlflow:URI (e.g. mlflow:sqlite:///mlflow.db)"

Scalar = tuple[str, float, int, float]  # (tag, value, step, wall time)


class _Sink(Protocol):
    def write(self, scalars: Sequence[Scalar]) -> None: ...
    def close(self, status: str) -> None: ...


class Tracker:
    """Turns metric records into the scalars of one tracking backend."""

    def __init__(self, sink: _Sink, where: str) -> None:
        self._sink = sink
        self.where = where
        # name -> iteration -> (task, node) -> (value, time): iterations not yet written
        self._open: dict[str, dict[int, dict[tuple[str, str], tuple[float, float]]]] = {}

    def add(self, records: Sequence[MetricRecord]) -> None:
        """Write new values (and the mean of every iteration they close)."""
        out: list[Scalar] = []
        for r in records:
            out.append((f"{r.name}/{r.alias}/{r.node_id}", r.value, r.step, r.time))
            its = self._open.setdefault(r.name, {})
            its.setdefault(r.iteration, {})[(r.alias, r.node_id)] = (r.value, r.time)
        for name, its in self._open.items():
            newest = max(its, default=-1)
            out += [self._mean(name, it, its.pop(it)) for it in sorted(its) if it < newest]
        if out:
            self._sink.write(out)

    @staticmethod
    def _mean(name: str, it: int, values: dict[tuple[str, str], tuple[float, float]]) -> Scalar:
        v = [x for x, _ in values.values()]
        return (name, sum(v) / len(v), it, max(t for _, t in values.values()))

    def close(self, status: str = "succeeded") -> None:
        """Write the means still open and end the run (its status: the swarm's)."""
        rest = [
            self._mean(n, it, vals) for n, its in self._open.items() for it, vals in its.items()
        ]
        self._open.clear()
        if rest:
            self._sink.write(rest)
        self._sink.close(status)


class _TensorBoard:
    def __init__(self, logdir: Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(logdir))

    def write(self, scalars: Sequence[Scalar]) -> None:
        for tag, value, step, wall in scalars:
            value_pb = self._summary.Value(tag=tag, simple_value=value)
            summary = self._summary(value=[value_pb])
            self._writer.add_event(self._event(wall_time=wall, step=step, summary=summary))
        self._writer.flush()  # TensorBoard shows the curve as it grows

    def close(self, status: str) -> None:
        self._writer.close()


class _MLflow:
    _BATCH = 1000  # MLflow's most metrics per log_batch call

    def __init__(self, uri: str, experiment: str, run_name: str) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        # MLflow tells each table it creates at INFO, between our own lines.
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        self._metric = Metric
        self._client = client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        run = client.create_run(exp_id, run_name=run_name, tags={"shoal.swarm": experiment})
        self.run_id: str = run.info.run_id

    def write(self, scalars: Sequence[Scalar]) -> None:
        metrics = [self._metric(t, v, int(w * 1000), s) for t, v, s, w in scalars]
        for i in range(0, len(metrics), self._BATCH):
            self._client.log_batch(self.run_id, metrics=metrics[i : i + self._BATCH])

    def close(self, status: str) -> None:
        state = {"succeeded": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED")
        self._client.set_terminated(self.run_id, status=state)


def _missing(kind: str, package: str, extra: str) -> ShoalError:
    return ShoalError(
        f"--track {kind}:... needs the {package} package, which is not installed",
        code="track.missing",
        hint=f"pip install 'shoal[{extra}]' (or pip install {package})",
    )


def open_tracker(spec: str, swarm: str, run: str) -> Tracker:
    """A tracker for ``tensorboard:DIR`` or ``mlflow:URI``.

    Parameters
    ----------
    spec
        What ``--track`` was given.
    swarm
        The swarm's name (MLflow's experiment).
    run
        The run's name (a run folder's name or a swarm id): TensorBoard's sub-folder,
        MLflow's run name.

    Raises
    ------
    ShoalError
        ``track.spec`` for another form, ``track.missing`` when the backend's package
        is not installed.
    """
    kind, sep, where = spec.partition(":")
    if not sep or not where or kind not in KINDS:
        raise ShoalError(f"--track {spec!r} names no tracker", code="track.spec", hint=_HOW)
    sink: Any
    if kind == "tensorboard":
        try:
            sink = _TensorBoard(Path(where) / run)
        except ImportError:
            raise _missing(kind, "tensorboard", "tensorboard") from None
        return Tracker(sink, f"TensorBoard: tensorboard --logdir {where}")
    try:
        sink = _MLflow(where, swarm, run)
    except ImportError:
        raise _missing(kind, "mlflow-skinny", "mlflow") from None
    return Tracker(sink, f"MLflow: {where}, experiment {swarm!r}, run {run!r} ({sink.run_id})")
