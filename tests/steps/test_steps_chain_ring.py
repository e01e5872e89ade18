"""``Sequential`` runs as an engine chain, ``RoundRobin`` as a ring (3 and 5 nodes: every
node's contribution is in every final resource), end to end in the simulator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from steps_user_ops import Gather, Visit

import shoal
from shoal import NodeProfile
from shoal.steps import Artifact, Collect, Finalize, RoundRobin, Sequential

pytestmark = pytest.mark.timeout(120)


def _nodes(tmp_path: Path, n: int) -> list[NodeProfile]:
    path = tmp_path / "t.csv"
    pd.DataFrame({"v": [1.0]}).to_csv(path, index=False)
    return [NodeProfile(name=f"n{i}", datasets={"t": path}) for i in range(n)]


def test_sequential_visits_every_node_once_in_turn(tmp_path: Path) -> None:
    artifact = Artifact(
        steps=[Sequential(operation=Visit(), distribution=Collect()), Finalize(operation=Gather())],
        dataset="t",
        name="chain",
    )
    run = shoal.simulate(artifact, nodes=_nodes(tmp_path, 3), executor="inline")
    (visited,) = run.globals["all"]  # the next step sees the last node's products
    assert sorted(visited) == ["n0", "n1", "n2"]


@pytest.mark.parametrize("n", [3, 5])
def test_round_robin_puts_every_node_in_every_final_resource(tmp_path: Path, n: int) -> None:
    artifact = Artifact(
        steps=[RoundRobin(operation=Visit(), distribution=Collect()), Finalize(operation=Gather())],
        dataset="t",
        name="ring",
    )
    run = shoal.simulate(artifact, nodes=_nodes(tmp_path, n), executor="inline")
    finals = run.globals["all"]
    names = sorted(f"n{i}" for i in range(n))
    assert len(finals) == n
    assert all(sorted(v) == names for v in finals), finals
