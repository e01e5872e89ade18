"""Metrics of a simulation as a researcher reads them (issue #16, point 4): a tidy
DataFrame, records without pandas, a matplotlib plot with a line per node and the
mean, and the values handed out while the run goes."""

from __future__ import annotations

import sys

import matplotlib
import pandas as pd
import pytest
from helpers import task_module

import shoal
from shoal._metrics.table import COLUMNS

matplotlib.use("Agg")  # no display: the figure's data is checked, not its pixels

BODY = """
node = int(self.world.node_id.rsplit("-", 1)[1])
self.logger.metric("acc", 0.5 + 0.1 * self.world.iteration + 0.01 * node)
self.logger.metric("loss", 1.0 / (1 + self.world.iteration))
"""


class Curves(shoal.Swarm):
    max_iterations = 3

    def __init__(self) -> None:
        self.worker = shoal.Task(task_module(BODY), method="all", alias="worker")

    def execute(self) -> shoal.Task:
        return self.worker()


def expected_acc(iteration: int) -> list[float]:
    return [0.5 + 0.1 * iteration + 0.01 * n for n in range(3)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> shoal.SimulationRun:
    batches: list[list[shoal.MetricRecord]] = []
    done = shoal.simulate(
        Curves(),
        nodes=3,
        executor="inline",
        run_dir=tmp_path_factory.mktemp("run"),
        on_metrics=batches.append,
    )
    assert done.ok, done.reason
    done.batches = batches  # type: ignore[attr-defined]
    return done


def test_metrics_is_a_tidy_dataframe(run: shoal.SimulationRun) -> None:
    df = run.metrics("acc")
    assert isinstance(df, pd.DataFrame)
    assert tuple(df.columns) == COLUMNS
    assert len(df) == 9 and set(df["swarm"]) == {"Curves"} and set(df["task"]) == {"worker"}
    means = df.groupby("iteration")["value"].mean()
    for it in range(3):
        assert means[it] == pytest.approx(sum(expected_acc(it)) / 3)
    assert set(run.metrics()["name"]) == {"acc", "loss"}


def test_records_without_pandas(run: shoal.SimulationRun, monkeypatch: pytest.MonkeyPatch) -> None:
    records = run.metrics("loss", frame=False)
    assert [type(r) for r in records] == [shoal.MetricRecord] * 9
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails
    assert run.metrics("loss") == records
    with pytest.raises(shoal.ShoalError) as e:
        run.metrics(frame=True)
    assert e.value.code == "metrics.pandas" and "pip install pandas" in str(e.value)


def test_plot_draws_a_line_per_node_and_the_mean(run: shoal.SimulationRun) -> None:
    import matplotlib.pyplot as plt

    ax = run.plot("acc")
    try:
        nodes = [line for line in ax.lines if (line.get_gid() or "").startswith("node:")]
        assert sorted(line.get_gid() for line in nodes) == [f"node:node-0000{i}" for i in range(3)]
        for line in nodes:
            n = int(line.get_gid()[-1])
            assert list(line.get_xdata()) == [0, 1, 2]
            assert list(line.get_ydata()) == pytest.approx([expected_acc(i)[n] for i in range(3)])
        (mean,) = [line for line in ax.lines if line.get_label() == "mean"]
        assert list(mean.get_ydata()) == pytest.approx([sum(expected_acc(i)) / 3 for i in range(3)])
        assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "acc"
    finally:
        plt.close(ax.figure)
    with pytest.raises(shoal.ShoalError, match="metrics logged: 'acc', 'loss'"):
        run.plot("accuracy")


def test_values_are_handed_out_as_the_run_goes(run: shoal.SimulationRun) -> None:
    batches = run.batches  # type: ignore[attr-defined]
    assert len(batches) >= 2  # not only once at the end
    assert [r for b in batches for r in b] == run.metrics(frame=False)
