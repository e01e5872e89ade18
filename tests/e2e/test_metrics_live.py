"""Metrics of a deployed swarm (issue #16, point 4), with a real coordinator and two
real node agents on loopback: `shoal status --watch` shows the latest metric values as
they arrive and streams them to TensorBoard, `shoal metrics` draws them,
`Client.metrics` is a tidy DataFrame and `shoal results --all-iterations` shows every
iteration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from deploy_harness import deployment, wait_nodes

import shoal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SWARM = '''
from shoal import Module, Swarm, Task

WORKER = """
import time
from shoal.runtime import Task

class W(Task):
    def run(self):
        time.sleep(0.3)  # long enough for the watcher to see each iteration
        node = int(self.world.node_id.rsplit("-", 1)[1])
        self.logger.metric("acc", 0.5 + 0.1 * self.world.iteration + 0.02 * node)
        self.world.results.add("n", self.world.iteration)

def main():
    W().run()
"""


class Live(Swarm):
    max_iterations = 4

    def __init__(self):
        self.worker = Task(Module(WORKER, name="worker"), method="all", alias="worker")

    def execute(self):
        return self.worker()
'''

MEAN_ACC = [0.51, 0.61, 0.71, 0.81]  # nodes 0 and 1: 0.5 + 0.1 * it + 0.02 * node


def test_a_live_swarm_s_metrics(tmp_path: Path) -> None:
    (tmp_path / "swarm.py").write_text(SWARM)
    with deployment(tmp_path) as d:
        coord = d.coordinator()
        for i in range(2):
            d.node(coord, f"node-0000{i}")
        with coord.user() as http:
            wait_nodes(http, ["node-00000", "node-00001"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_COORDINATOR=coord.url, SHOAL_TOKEN=coord.user_token, COLUMNS="100")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "shoal", *args],
                capture_output=True,
                text=True,
                timeout=90,
                cwd=tmp_path,
                env=env,
            )

        deployed = cli("deploy", "swarm.py")
        assert deployed.returncode == 0, deployed.stderr
        swarm_id = deployed.stdout.strip()
        watched = cli("status", swarm_id, "--watch", "--track", "tensorboard:tb")
        assert watched.returncode == 0, watched.stdout + watched.stderr + coord.output()

        # As they arrived: one line per new latest value (not a TTY), then the table.
        lines = [x for x in watched.stdout.splitlines() if x.startswith("metrics: acc")]
        assert lines[-1] == "metrics: acc 0.81 (iteration 3, 2 nodes)", watched.stdout
        assert len(lines) >= 2  # shown while the swarm ran, not only at its end
        (row,) = [x for x in watched.stdout.splitlines() if x.strip().startswith("acc ")]
        assert [c.strip() for c in row.split("│")][:6] == ["acc", "3", "0.81", "0.8", "0.82", "2"]

        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        board = EventAccumulator(str(tmp_path / "tb" / swarm_id))
        board.Reload()
        assert [e.value for e in board.Scalars("acc")] == pytest.approx(MEAN_ACC, abs=1e-6)

        drawn = cli("metrics", swarm_id, "acc", "-o", "acc.json")
        assert drawn.returncode == 0, drawn.stderr
        assert "⣿ mean" in drawn.stdout and "0.81" in drawn.stdout

        every = cli("results", swarm_id, "n", "--all-iterations")
        assert every.returncode == 0, every.stderr
        pairs = {
            (c[0], c[2])
            for line in every.stdout.splitlines()
            if len(c := [x.strip() for x in line.split("│")]) >= 4 and c[0].startswith("node-")
        }
        assert pairs == {(f"node-0000{n}", str(it)) for n in range(2) for it in range(4)}

        with shoal.Client(coord.url, coord.user_token) as client:
            df = client.metrics(swarm_id, "acc")
        assert isinstance(df, pd.DataFrame) and set(df["swarm"]) == {swarm_id}
        assert list(df.groupby("iteration")["value"].mean()) == pytest.approx(MEAN_ACC)
