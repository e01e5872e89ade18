"""A real node agent enforces node.toml's ``[privacy]`` budget on DP estimators, with the
ledger DP-FedAvg uses, across a restart (issue 19, point 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deploy_harness import (
    deployment,
    global_value,
    kill_group,
    submit,
    wait_nodes,
    wait_status,
)
from helpers import poll_for

from shoal.steps import DP, CountEstimator, to_swarm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _count(eps: float) -> object:
    return to_swarm(CountEstimator(privacy=DP(epsilon=eps)).artifact(dataset="t", name="dpcount"))


def test_the_node_refuses_an_estimator_past_its_budget_even_after_a_restart(
    tmp_path: Path,
) -> None:
    table = tmp_path / "t.csv"
    pd.DataFrame({"x": np.arange(40.0)}).to_csv(table, index=False)
    with deployment(tmp_path) as d:
        coord = d.coordinator()
        extra = 'executor = "process"\n[privacy.t]\nepsilon = 1.5\ndelta = 1e-5'
        proc, folder = d.node(coord, "site-a", {"t": table}, extra=extra)
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, ["site-a"])

        # eps 1 fits the budget of 1.5: a noisy count of the 40 rows.
        first = submit(user, _count(1.0))
        status = wait_status(user, first, timeout=90)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        assert global_value(user, first, "result") == pytest.approx(40, abs=25)

        # Another eps 1 would bring it to 2: the node refuses, the run says why.
        status = wait_status(user, submit(user, _count(1.0)), timeout=90)
        assert status["status"] == "failed", json.dumps(status, indent=1)
        (failure,) = status["failures"]
        error = failure["error"]
        assert failure["node_id"] == "site-a"
        assert "node 'site-a' refuses to spend privacy budget on dataset 't'" in error
        assert "for steps CountEstimator" in error and "over the budget of 1.5" in error
        assert "spent 1, remaining 0.5" in error, error

        ledger = json.loads((folder / "state" / "privacy-ledger.json").read_text())
        assert [c["label"] for c in ledger["datasets"]["t"]] == ["steps CountEstimator"]

        # Restarted, the agent remembers: eps 0.6 is still refused, 0.4 still fits.
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
        status = wait_status(user, submit(user, _count(0.6)), timeout=90)
        assert status["status"] == "failed"
        assert "spent 1, remaining 0.5" in status["failures"][0]["error"]
        last = submit(user, _count(0.4))
        status = wait_status(user, last, timeout=90)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        ledger = json.loads((folder / "state" / "privacy-ledger.json").read_text())
        assert [c["noise_multiplier"] for c in ledger["datasets"]["t"]] == [1.0, 2.5]
