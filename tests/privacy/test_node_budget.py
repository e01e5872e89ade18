"""A real node agent enforces node.toml's [privacy] budget, across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deploy_harness import deployment, kill_group, submit, wait_nodes, wait_status
from helpers import poll_for

import shoal
from shoal._node.config import parse_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

QUERY = """
import numpy as np
from shoal.runtime import Task
from shoal.privacy import Laplace, bounded_count, spend


class Query(Task):
    def run(self):
        mech = Laplace(epsilon=0.5)
        answer = spend(self, "digits", mech.charge(label="count of 3s"))
        y = self.local.get_dataset("digits")["y"]
        self.world.results.add("count", bounded_count(int(np.sum(y == 3)), mech))
        self.world.results.add("remaining", answer["remaining"])


def main():
    Query().run()
"""


class Counting(shoal.Swarm):
    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.max_iterations = rounds
        self.query = shoal.Task(shoal.Module(QUERY, datasets=["digits"]), method="all")

    def execute(self) -> shoal.Task:
        return self.query()


def test_the_node_refuses_the_query_past_its_budget_even_after_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "digits.npz"
    np.savez(data, X=np.zeros((20, 2)), y=np.arange(20) % 5)
    with deployment(tmp_path) as d:
        coord = d.coordinator()
        # executor before the [privacy.digits] table: TOML keys after it belong to it.
        extra = 'executor = "process"\n[privacy.digits]\nepsilon = 1.2\ndelta = 1e-5'
        proc, folder = d.node(coord, "site-a", {"digits": data}, extra=extra)
        user = coord.user()
        d.clients.append(user)  # closed with the deployment
        wait_nodes(user, ["site-a"])

        status = wait_status(user, submit(user, Counting(3)))
        assert status["status"] == "failed", json.dumps(status, indent=1)
        (failure,) = status["failures"]
        assert failure["iteration"] == 2 and failure["node_id"] == "site-a"
        error = failure["error"]
        assert "node 'site-a' refuses to spend privacy budget on dataset 'digits'" in error
        assert "for count of 3s" in error and "spent 1, remaining 0.2" in error, error
        assert "larger [privacy] budget in node.toml" in error

        ledger = json.loads((folder / "state" / "privacy-ledger.json").read_text())
        assert [c["label"] for c in ledger["datasets"]["digits"]] == ["count of 3s"] * 2

        # Restarted, the agent remembers what was spent: the first query is refused.
        kill_group(proc)
        poll_for(
            lambda: (
                not {n["node_id"]: n for n in user.get("/v1/nodes").json()}["site-a"]["connected"]
            ),
            30,
            "the coordinator to see the agent gone",
        )
        d.restart_node(folder)
        wait_nodes(user, ["site-a"])
        status = wait_status(user, submit(user, Counting(1)))
        assert status["status"] == "failed"
        assert "spent 1, remaining 0.2" in status["failures"][0]["error"]


def test_node_config_privacy_tables(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"")
    base = {"node_id": "a", "coordinator": "http://x:1", "state_dir": "s"}
    cfg = parse_config(
        {**base, "datasets": {"d": "d.npz"}, "privacy": {"d": {"epsilon": 2.0}}}, tmp_path
    )
    assert cfg.privacy["d"].epsilon == 2.0 and cfg.privacy["d"].delta == 1e-5
    with pytest.raises(shoal.ShoalError) as err:
        parse_config(
            {**base, "datasets": {"d": "d.npz"}, "privacy": {"e": {"epsilon": -1}}}, tmp_path
        )
    text = str(err.value)
    assert "privacy.e.epsilon" in text and "greater than 0" in text
    with pytest.raises(shoal.ShoalError, match=r"privacy.e: no dataset 'e' in \[datasets\]"):
        parse_config(
            {**base, "datasets": {"d": "d.npz"}, "privacy": {"e": {"epsilon": 1}}}, tmp_path
        )
