"""`shoal metrics` on a run folder, the headline metrics of `shoal simulate`, and
`--track` to TensorBoard and MLflow, read back with their own readers (issue #16,
point 4): real processes, real files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

SWARM = '''
from shoal import Module, Swarm, Task

WORKER = """
from shoal.runtime import Task

class W(Task):
    def run(self):
        node = int(self.world.node_id.rsplit("-", 1)[1])
        self.logger.metric("acc", 0.5 + 0.1 * self.world.iteration + 0.01 * node)
        self.logger.metric("loss", 1.0 / (1 + self.world.iteration))

def main():
    W().run()
"""


class Curves(Swarm):
    max_iterations = 3

    def __init__(self):
        self.worker = Task(Module(WORKER, name="worker"), method="all", alias="worker")

    def execute(self):
        return self.worker()
'''

MEAN_ACC = [0.51, 0.61, 0.71]  # nodes 0..2: 0.5 + 0.1 * it + 0.01 * node


def shoal(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=cwd,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("metrics")
    (root / "swarm.py").write_text(SWARM)
    done = shoal(
        "simulate",
        "swarm.py",
        "--nodes",
        "3",
        "--run-dir",
        "run",
        "--track",
        "tensorboard:tb",
        "--track",
        f"mlflow:sqlite:///{root / 'mlflow.db'}",
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root, done


@pytest.mark.slow
def test_simulate_shows_the_headline_metrics(
    run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, done = run
    table = done.stdout.split("metrics (latest iteration; mean over nodes)")[1]
    acc = next(line for line in table.splitlines() if line.strip().startswith("acc"))
    cells = [c.strip() for c in acc.split("│")]
    assert cells[:6] == ["acc", "2", "0.71", "0.7", "0.72", "3"]  # iteration 2 over 3 nodes
    assert "tracking metrics in TensorBoard" in done.stderr


@pytest.mark.slow
def test_metrics_table_chart_and_files(run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = run
    out = shoal("metrics", "run", "acc", "-o", "m.csv", cwd=root)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    table = {r[0]: r for r in rows if r and r[0].isdigit() and len(r) == 9}  # it │ n │ mean...
    assert [float(table[str(it)][4]) for it in range(3)] == pytest.approx(MEAN_ACC)
    assert "⣿ mean" in out.stdout and "iteration" in out.stdout  # the chart's legend, axis
    assert any(ch in out.stdout for ch in "⠁⠂⠄⡀⠈⠐⠠⢀")  # Braille dots: the curve
    with open(root / "m.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == 9
    assert set(written[0]) == {
        "swarm",
        "iteration",
        "node",
        "task",
        "name",
        "value",
        "step",
        "time",
    }
    assert {r["swarm"] for r in written} == {"Curves"}
    every = shoal("metrics", "run", "-o", "all.json", "--no-chart", cwd=root)
    assert every.returncode == 0, every.stderr
    assert len(json.loads((root / "all.json").read_text())) == 18
    unknown = shoal("metrics", "run", "accuracy", cwd=root)
    assert unknown.returncode == 1 and "metrics logged: acc, loss" in unknown.stderr
    missing = shoal("metrics", "./no-such-run", cwd=root)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_track_streams_to_tensorboard_and_mlflow(
    run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = run
    board = EventAccumulator(str(root / "tb" / "run"))
    board.Reload()
    tags = board.Tags()["scalars"]
    assert {"acc", "loss", "acc/worker/node-00000", "loss/worker/node-00002"} <= set(tags)
    means = board.Scalars("acc")
    assert [e.step for e in means] == [0, 1, 2]
    assert [e.value for e in means] == pytest.approx(MEAN_ACC, abs=1e-6)  # float32
    node1 = board.Scalars("acc/worker/node-00001")
    assert [e.value for e in node1] == pytest.approx([0.51, 0.61, 0.71], abs=1e-6)

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("Curves")
    assert exp is not None
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "acc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (i, pytest.approx(v)) for i, v in enumerate(MEAN_ACC)
    ]


def test_a_tracker_spec_that_names_no_tracker_or_a_missing_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal._errors import ShoalError
    from shoal._metrics.track import open_tracker

    with pytest.raises(ShoalError) as e:
        open_tracker("wandb:project", "Curves", "run")
    assert e.value.code == "track.spec" and "tensorboard:DIR" in str(e.value)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(ShoalError) as e:
        open_tracker(f"tensorboard:{tmp_path}", "Curves", "run")
    assert e.value.code == "track.missing" and "shoal[tensorboard]" in str(e.value)
