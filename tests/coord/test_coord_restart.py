"""Killing the coordinator mid-swarm loses nothing: a restart on the same database
replays the event log and the swarm finishes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from deploy_harness import (
    deployment,
    global_value,
    kill_group,
    submit,
    wait_nodes,
    wait_status,
)
from swarms import MeanSwarm

pytestmark = pytest.mark.timeout(180)


def test_sigkill_mid_swarm_then_restart_on_the_same_database_finishes_it(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'shoal.db'}"
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=db, heartbeat_timeout=5.0)
        for i in range(2):
            path = tmp_path / f"n{i}.npy"
            np.save(path, np.arange(4, dtype=np.float64) + i)
            d.node(coord, f"n{i}", {"numbers": path})
        with coord.user() as user:
            wait_nodes(user, ["n0", "n1"])
            swarm_id = submit(user, MeanSwarm(iterations=4, sleep=0.7))
            wait_status(user, swarm_id, timeout=60, until=lambda s: s["iteration"] >= 1)

        kill_group(coord.proc, signal.SIGKILL)
        # Same state folder (tokens) and database, same port (the nodes' config).
        port = int(coord.url.rsplit(":", 1)[1])
        again = d.coordinator(state=coord.state, db=db, port=port, heartbeat_timeout=5.0)
        with again.user() as user:
            status = wait_status(user, swarm_id, timeout=90)
            assert status["status"] == "succeeded", json.dumps(status, indent=1)
            assert status["reason"] == "max_iterations reached (4)"
            assert global_value(user, swarm_id, "rounds") == 4
            assert global_value(user, swarm_id, "mean") == pytest.approx(2.0)
