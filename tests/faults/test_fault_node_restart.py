"""A node agent that restarts rejoins with the same identity and its ``local`` state.

``self.local`` state is kept by the coordinator per (swarm, node id, task), so it
survives anything that happens to the agent process as long as the node keeps its id;
the id is proven by the credential in ``<state_dir>/credential``, which a restarted
agent reuses without the join token.
"""

from __future__ import annotations

import json
import time

import pytest
from deploy_harness import results, submit
from fault_harness import Fed
from fault_swarms import Counter

pytestmark = pytest.mark.timeout(90)


def test_a_restarted_agent_rejoins_with_its_identity_and_local_state(fed: Fed) -> None:
    # Generous: the agent must be back before it would count as lost by silence.
    fed.start(heartbeat_timeout=8.0)
    for n in ("n0", "n1"):
        fed.node(n)
    fed.wait_connected("n0", "n1")
    credential = fed.nodes["n1"].credential()
    swarm_id = submit(fed.user, Counter(iterations=2, sleep=1.2, slow=1, retries=1))
    fed.wait_log(swarm_id, "working: iteration 1 on n1 runs 1")

    fed.kill_node("n1")  # in the middle of its instance of iteration 1
    (fed.nodes["n1"].folder / "join-token").unlink()  # it must not need it again
    restarted = time.time()
    fed.restart_node("n1")
    fed.wait_connected("n1", since=restarted)

    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    # The killed attempt is lost; its retry ran on the restarted agent, same node.
    (lost,) = status["failures"]
    assert (lost["node_id"], lost["iteration"], lost["attempt"], lost["kind"]) == (
        "n1",
        1,
        0,
        "lost",
    )
    assert lost["error"] == "node n1 lost: the node agent restarted"
    for it in range(2):  # the count went on from where it was: nothing forgotten
        rows = results(fed.user, swarm_id, "runs", alias="counter", iteration=it)
        assert sorted((r["node_id"], r["value"]) for r in rows) == [("n0", it + 1), ("n1", it + 1)]
    node = fed.nodes["n1"]
    assert node.credential() == credential
    assert node.log().count("enrolled node") == 1  # at its first start only
    assert [n for n in fed.node_rows() if n == "n1"] == ["n1"]
