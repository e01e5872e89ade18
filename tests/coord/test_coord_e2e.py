"""A coordinator and node agents as real processes on loopback, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deploy_harness import (
    deployment,
    global_value,
    results,
    submit,
    wait_nodes,
    wait_status,
)
from swarms import MeanSwarm

pytestmark = pytest.mark.timeout(120)


def _data(root: Path, n: int) -> dict[str, Path]:
    paths = {}
    for i in range(n):
        p = root / f"numbers{i}.npy"
        np.save(p, np.arange(10 * (i + 1), dtype=np.float64))
        paths[f"n{i}"] = p
    return paths


def test_a_swarm_runs_on_real_nodes_and_its_results_and_globals_are_readable(
    tmp_path: Path,
) -> None:
    data = _data(tmp_path, 3)
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        for node_id, path in data.items():
            d.node(coord, node_id, {"numbers": path})
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, list(data))
        swarm_id = submit(user, MeanSwarm(iterations=2))
        status = wait_status(user, swarm_id, timeout=60)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        assert status["iteration"] == 1
        assert status["tasks"]["worker"]["succeeded"] == 3
        all_values = np.concatenate([np.load(p) for p in data.values()])
        assert global_value(user, swarm_id, "mean") == pytest.approx(all_values.mean())
        assert global_value(user, swarm_id, "rounds") == 2
        assert global_value(user, swarm_id, "nodes") == sorted(data)
        total = global_value(user, swarm_id, "total")  # a blob both ways
        assert total.shape == (20_000,) and float(total[0]) == 2.0 * 3
        rows = results(user, swarm_id, "count", alias="worker")
        assert sorted((r["node_id"], r["value"]) for r in rows) == [
            ("n0", 10),
            ("n1", 20),
            ("n2", 30),
        ]
        logs = user.get(f"/v1/swarms/{swarm_id}/logs", params={"task": "aggregator"}).json()
        assert [r["message"] for r in logs] == ["aggregated 3 nodes"] * 2
        printed = user.get(f"/v1/swarms/{swarm_id}/logs", params={"node": "n1"}).json()
        assert any("worker on n1 iteration 1" in r["message"] for r in printed)
        metrics = user.get(f"/v1/swarms/{swarm_id}/metrics", params={"name": "mean"}).json()
        assert len(metrics) == 2
        nodes = {n["node_id"]: n for n in user.get("/v1/nodes").json()}
        assert set(nodes) == set(data) and all(n["connected"] for n in nodes.values())
        assert nodes["n0"]["datasets"] == ["numbers"]
