"""A node agent killed with SIGKILL in the middle of an iteration.

With ``retries`` its instance runs again on another node and the swarm ends exactly as
without the fault; with ``condition=RESULT`` and ``min_results`` the iteration goes on
without it; with neither, the swarm fails within the heartbeat timeout, naming the node.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from deploy_harness import global_value, results, submit
from fault_harness import HEARTBEAT_TIMEOUT_S, Fed
from fault_swarms import CHAIN_KEYS, Chain, fault_free

from shoal import Condition

pytestmark = pytest.mark.timeout(90)

NODES = ("n0", "n1", "n2")


def chain_globals(fed: Fed, swarm_id: str) -> dict[str, Any]:
    return {k: global_value(fed.user, swarm_id, k) for k in CHAIN_KEYS}


def three_nodes(fed: Fed, heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S) -> None:
    fed.start(heartbeat_timeout=heartbeat_timeout)
    for n in NODES:
        fed.node(n)
    fed.wait_connected(*NODES)


def test_with_retries_the_instance_runs_again_elsewhere_and_the_result_is_unchanged(
    fed: Fed,
) -> None:
    expected = fault_free(Chain(iterations=2), nodes=3)
    three_nodes(fed)
    # worker: `any` on 2 of 3 nodes, the least loaded first, so n0 and n1 every time.
    swarm_id = submit(fed.user, Chain(iterations=2, sleep=1.2, slow=0, retries=1))
    fed.wait_log(swarm_id, "working: iteration 0 on n1")
    fed.kill_node("n1")

    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert status["reason"] == "max_iterations reached (2)"
    (lost,) = status["failures"]
    assert (lost["node_id"], lost["alias"], lost["iteration"], lost["kind"]) == (
        "n1",
        "worker",
        0,
        "lost",
    )
    assert lost["error"] == f"node n1 lost: no heartbeat for {HEARTBEAT_TIMEOUT_S:g}s"
    # Its slot ran again on n2: the eligible node holding no other slot of the task.
    rows = results(fed.user, swarm_id, "y", alias="worker", iteration=0)
    assert sorted(r["node_id"] for r in rows) == ["n0", "n2"]
    assert chain_globals(fed, swarm_id) == expected


def test_with_condition_result_the_iteration_goes_on_without_the_node(fed: Fed) -> None:
    def swarm(sleep: float = 0.0) -> Chain:  # `all`, and downstream starts at 2 results
        return Chain(
            iterations=2,
            sleep=sleep,
            slow=0,
            workers=None,
            condition=Condition.RESULT,
            min_results=2,
        )

    expected = fault_free(swarm(), nodes=2)  # as if the swarm had only the live nodes
    # A long heartbeat timeout: the iteration must go on without waiting for it.
    three_nodes(fed, heartbeat_timeout=20.0)
    swarm_id = submit(fed.user, swarm(sleep=1.2))
    fed.wait_log(swarm_id, "working: iteration 0 on n1")
    fed.kill_node("n1")
    killed = time.time()

    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert status["reason"] == "max_iterations reached (2)"
    # Iteration 0 aggregated the two live nodes long before n1 could count as lost.
    record = fed.wait_log(swarm_id, "in iteration 0")
    assert record["message"] == "aggregated 2 results in iteration 0"
    assert record["time"] < killed + 20.0
    rows = results(fed.user, swarm_id, "y", alias="worker", iteration=0)
    assert sorted(r["node_id"] for r in rows) == ["n0", "n2"]
    assert chain_globals(fed, swarm_id) == expected


def test_without_retries_the_swarm_fails_naming_the_node_within_the_heartbeat_timeout(
    fed: Fed,
) -> None:
    three_nodes(fed)
    swarm_id = submit(fed.user, Chain(iterations=2, sleep=1.2, slow=0))
    fed.wait_log(swarm_id, "working: iteration 0 on n1")
    fed.kill_node("n1")
    killed = time.monotonic()

    status = fed.wait_done(swarm_id, timeout=HEARTBEAT_TIMEOUT_S + 10)
    elapsed = time.monotonic() - killed
    assert status["status"] == "failed", json.dumps(status, indent=1)
    # The last heartbeat came at most one interval (0.5 s) before the kill; the
    # coordinator checks every heartbeat_timeout / 4; the test polls every 0.1 s.
    assert elapsed < HEARTBEAT_TIMEOUT_S + 2.0, elapsed
    assert status["reason"].startswith("task 'worker' failed in iteration 0: ")
    assert status["reason"].endswith(
        f"on node n1 (lost): node n1 lost: no heartbeat for {HEARTBEAT_TIMEOUT_S:g}s"
    )
    (lost,) = status["failures"]
    assert (lost["node_id"], lost["kind"], lost["iteration"]) == ("n1", "lost", 0)
