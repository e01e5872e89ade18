"""User operations ship as ordinary modules: Initialize -> Parallel -> Finalize with
Distribute and Collect, on a named initiator, in worker processes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from steps_user_ops import ScaledSum, Seed, Total

import shoal
from shoal import NodeProfile
from shoal.steps import Artifact, Collect, Distribute, Finalize, Initialize, Parallel


@pytest.mark.timeout(120)
def test_user_operations_run_in_worker_processes(tmp_path: Path) -> None:
    nodes = []
    for i, values in enumerate([[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]):
        path = tmp_path / f"p{i}.csv"
        pd.DataFrame({"v": values}).to_csv(path, index=False)
        nodes.append(NodeProfile(name=f"n{i}", datasets={"t": path}))
    nodes.append(NodeProfile(name="hub"))  # the initiator holds no data
    artifact = Artifact(
        steps=[
            Initialize(operation=Seed(scale=10.0), distribution=Distribute()),
            Parallel(operation=ScaledSum(column="v"), distribution=Collect()),
            Finalize(operation=Total()),
        ],
        dataset="t",
        initiator="hub",
        name="scaled_sum",
    )
    run = shoal.simulate(artifact, nodes=nodes, executor="process", workers=2)
    assert run.globals["total"] == 210.0
    assert run.globals["parts"] == 3  # only the nodes holding "t" ran the Parallel step
