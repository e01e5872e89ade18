"""Partitioned datasets are written for a run and removed when it ends (issue #16,
point 10): run folders do not pile up copies of the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import task_module

import shoal


class _Reads(shoal.Swarm):
    max_iterations = 1

    def __init__(self) -> None:
        body = 'self.world.results.add("n", len(self.local.get_dataset("d")["y"]))'
        self.t = shoal.Task(task_module(body, datasets=["d"]), method="all", alias="t")

    def execute(self) -> shoal.Task:
        return self.t()


def test_shares_exist_during_the_run_and_are_removed_after(tmp_path: Path) -> None:
    source = tmp_path / "d.npz"
    np.savez(source, x=np.arange(20.0).reshape(10, 2), y=np.arange(10) % 2)
    run_dir = tmp_path / "run"
    run = shoal.simulate(
        _Reads(),
        nodes=3,
        datasets={"d": source},
        partition="iid",
        executor="inline",
        run_dir=run_dir,
    )
    assert run.ok, run.reason
    assert sorted(run.results.select("n").values()) == [3, 3, 4]  # each read its share
    assert not (run_dir / "data").exists()  # ...and the shares went with the run
    assert source.is_file()  # the source is never touched
