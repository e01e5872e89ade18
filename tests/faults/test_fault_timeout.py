"""A task that hangs is killed at its timeout and handled like any failure: retried
when it has retries, else the swarm fails with a message naming the timeout."""

from __future__ import annotations

import json
import time

import pytest
from deploy_harness import results, submit
from fault_harness import Fed, task_processes
from fault_swarms import Hang

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 1.5


def wait_hanging(fed: Fed, swarm_id: str) -> None:
    """Wait until the task hangs on n0 (its process is there)."""
    fed.wait_log(swarm_id, "working: iteration 0 on n0")
    assert task_processes(fed.nodes["n0"]), "the hanging task has no process"


def wait_killed(fed: Fed, timeout: float) -> None:
    fed.wait("the hung task killed", lambda: not task_processes(fed.nodes["n0"]), timeout)


def two_nodes(fed: Fed) -> None:
    fed.start()
    for n in ("n0", "n1"):
        fed.node(n)
    fed.wait_connected("n0", "n1")


def test_a_hung_task_is_killed_at_its_timeout_and_retried(fed: Fed) -> None:
    two_nodes(fed)
    # `any` takes the least loaded node, n0 first; the retry goes to n1.
    swarm_id = submit(fed.user, Hang("n0", timeout=TIMEOUT_S, retries=1))
    wait_hanging(fed, swarm_id)
    seen = time.monotonic()
    wait_killed(fed, timeout=TIMEOUT_S + 5)
    assert time.monotonic() - seen < TIMEOUT_S + 5

    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (failure,) = status["failures"]
    assert (failure["node_id"], failure["kind"], failure["attempt"]) == ("n0", "timeout", 0)
    assert failure["error"] == f"timed out after {TIMEOUT_S:g}s"
    (row,) = results(fed.user, swarm_id, "answer", alias="hanger", iteration=0)
    assert (row["node_id"], row["value"]) == ("n1", 42)


def test_a_hung_task_without_retries_fails_the_swarm_naming_the_timeout(fed: Fed) -> None:
    two_nodes(fed)
    swarm_id = submit(fed.user, Hang("n0", timeout=TIMEOUT_S, retries=0))
    wait_hanging(fed, swarm_id)
    status = fed.wait_done(swarm_id, timeout=TIMEOUT_S + 10)
    assert status["status"] == "failed", json.dumps(status, indent=1)
    assert status["reason"].endswith(f"on node n0 (timeout): timed out after {TIMEOUT_S:g}s")
    (failure,) = status["failures"]
    assert (failure["node_id"], failure["kind"]) == ("n0", "timeout")
    wait_killed(fed, timeout=5)


def test_a_hung_task_on_a_node_cut_off_is_killed_by_the_node_itself(fed: Fed) -> None:
    timeout = 3.0  # the cut must come before the coordinator's cancel
    fed.start(heartbeat_timeout=10.0)
    fed.node("n0", via_proxy=True)
    fed.wait_connected("n0")
    proxy = fed.nodes["n0"].proxy
    assert proxy is not None
    swarm_id = submit(fed.user, Hang("n0", timeout=timeout, retries=0))
    wait_hanging(fed, swarm_id)
    proxy.cut()  # the coordinator's cancel cannot reach the node
    # The agent kills it at the timeout plus its grace (5 s) on its own.
    wait_killed(fed, timeout=timeout + 5 + 5)
    assert proxy.refused > 0  # it was cut off all along
    assert "cancelling" not in fed.nodes["n0"].log()  # no cancel came
    proxy.restore()
    status = fed.wait_done(swarm_id)
    assert status["status"] == "failed", json.dumps(status, indent=1)
    (failure,) = status["failures"]
    assert (failure["node_id"], failure["kind"]) == ("n0", "timeout")
