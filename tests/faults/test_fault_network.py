"""A node cut off from the network and reconnected carries on; a request whose answer
was lost is sent again and counts once (uploads are idempotent).

The node agent reaches the coordinator through a TCP proxy (:mod:`proxy`) that the test
cuts (every connection closed, new ones reset), restores, or makes lose one answer.
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import pytest
from deploy_harness import global_value, results, submit
from fault_harness import Fed
from fault_swarms import CHAIN_KEYS, Chain, fault_free, src

from shoal import Swarm, Task
from shoal._codec import encode

pytestmark = pytest.mark.timeout(90)

NODES = ("n0", "n1", "n2")


def chain_globals(fed: Fed, swarm_id: str) -> dict[str, Any]:
    return {k: global_value(fed.user, swarm_id, k) for k in CHAIN_KEYS}


def three_nodes_n1_behind_a_proxy(fed: Fed, heartbeat_timeout: float) -> None:
    fed.start(heartbeat_timeout=heartbeat_timeout)
    for n in NODES:
        fed.node(n, via_proxy=n == "n1")
    fed.wait_connected(*NODES)


def test_a_short_cut_costs_nothing(fed: Fed) -> None:
    expected = fault_free(Chain(iterations=2), nodes=3)
    three_nodes_n1_behind_a_proxy(fed, heartbeat_timeout=5.0)
    proxy = fed.nodes["n1"].proxy
    assert proxy is not None
    swarm_id = submit(fed.user, Chain(iterations=2, sleep=1.2, slow=0))  # no retries
    fed.wait_log(swarm_id, "working: iteration 0 on n1")
    proxy.cut()
    # Cut off until the agent has been refused a few times, well inside the timeout.
    fed.wait("n1 refused", lambda: proxy.refused >= 3, timeout=4)
    proxy.restore()

    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert status["failures"] == []
    rows = results(fed.user, swarm_id, "y", alias="worker", iteration=0)
    assert sorted(r["node_id"] for r in rows) == ["n0", "n1"]
    assert chain_globals(fed, swarm_id) == expected


def test_a_node_cut_off_past_the_heartbeat_timeout_is_replaced_then_carries_on(
    fed: Fed,
) -> None:
    expected = fault_free(Chain(iterations=2), nodes=3)
    three_nodes_n1_behind_a_proxy(fed, heartbeat_timeout=2.0)
    proxy = fed.nodes["n1"].proxy
    assert proxy is not None
    swarm_id = submit(fed.user, Chain(iterations=2, sleep=1.2, slow=0, retries=1))
    fed.wait_log(swarm_id, "working: iteration 0 on n1")
    proxy.cut()
    cut_at = time.time()
    fed.wait("n1 lost", lambda: not fed.node_rows()["n1"]["connected"], timeout=10)

    def redone_elsewhere_while_n1_stays_away() -> bool:
        # Nothing of n1 reaches the coordinator while it is cut off: it stays lost, and
        # the coordinator has not heard from it since the cut (give or take a request
        # that was on its way).
        n1 = fed.node_rows()["n1"]
        assert not n1["connected"], "n1 came back while cut off"
        assert n1["last_seen"] < cut_at + 0.5, "n1 was heard from while cut off"
        return any("iteration 0 on n2" in r["message"] for r in fed.logs(swarm_id))

    fed.wait("n1's work started on n2", redone_elsewhere_while_n1_stays_away, timeout=15)
    # Restored while n2 redoes the work (it pauses 1.2 s): n1 is back before iteration 1.
    restored = time.time()
    proxy.restore()
    fed.wait_connected("n1", since=restored)  # back by itself

    status = fed.wait_done(swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (lost,) = status["failures"]
    assert (lost["node_id"], lost["iteration"], lost["kind"]) == ("n1", 0, "lost")
    # Its work of iteration 0 ran on n2; what it finished while cut off did not count.
    rows = results(fed.user, swarm_id, "y", alias="worker", iteration=0)
    assert sorted(r["node_id"] for r in rows) == ["n0", "n2"]
    # It carried on: iteration 1 placed a worker on it again.
    rows = results(fed.user, swarm_id, "y", alias="worker", iteration=1)
    assert sorted(r["node_id"] for r in rows) == ["n0", "n1"]
    assert chain_globals(fed, swarm_id) == expected


def test_requests_whose_answers_were_lost_are_sent_again_and_count_once(fed: Fed) -> None:
    expected = fault_free(Chain(iterations=2), nodes=3)
    three_nodes_n1_behind_a_proxy(fed, heartbeat_timeout=5.0)
    proxy = fed.nodes["n1"].proxy
    assert proxy is not None
    # n1's first metric, printed line, result and end report reach the coordinator,
    # which answers; the answers are lost on the way back, so the agent sends each again.
    # (A result rides on its instance's end report: the first two reports are trapped.)
    patterns = (b"results.add", b"metric", b"working: iteration 1", b"/done")
    lost = [proxy.lose_answer(p) for p in patterns]
    swarm_id = submit(fed.user, Chain(iterations=2))  # no retries
    status = fed.wait_done(swarm_id)
    assert all(e.is_set() for e in lost), "an answer was not lost: the test did not test"
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert status["failures"] == []
    assert chain_globals(fed, swarm_id) == expected  # counts == [2, 2]
    rows = results(fed.user, swarm_id, "y", alias="worker", iteration=0)
    assert sorted(r["node_id"] for r in rows) == ["n0", "n1"]
    metrics = fed.user.get(f"/v1/swarms/{swarm_id}/metrics", params={"node": "n1"}).json()
    assert sorted(m["step"] for m in metrics) == [0, 1]
    printed = [r["message"] for r in fed.logs(swarm_id, node="n1", task="worker")]
    assert printed == [f"working: iteration {it} on n1" for it in range(2)]


REPLAY_WORKER = 'self.world.results.add("y", 5)'
REPLAY_AGGREGATOR = """
ys = self.world.results.select("y")
self.world.globals["total"] = sum(ys.values())
self.world.globals["nodes"] = sorted(ys)
"""


class Replay(Swarm):
    """worker on every node (``y = 5``) -> aggregator (never on the hand-driven node)."""

    def __init__(self) -> None:
        self.name = "replay"
        self.max_iterations = 1
        self.placement_timeout = 30.0
        self.worker = Task(src(REPLAY_WORKER, "Worker"), method="all", alias="worker")
        self.aggregator = Task(
            src(REPLAY_AGGREGATOR, "Aggregator"), alias="aggregator", excepted_ids=["manual"]
        )

    def execute(self) -> Task:
        return self.aggregator(self.worker())


def test_an_upload_replayed_over_http_is_counted_once(fed: Fed) -> None:
    coord = fed.start(heartbeat_timeout=5.0)
    fed.node("n0")
    # The test is the agent of node "manual": every request is sent twice, byte for byte.
    import httpx

    with httpx.Client(base_url=coord.url, timeout=30) as node:
        enrol = {"join_token": coord.join_token, "node_id": "manual", "images": ["python"]}
        credential = node.post("/v1/nodes/enrol", json=enrol).json()["credential"]
        node.headers["Authorization"] = f"Bearer {credential}"
        beat = {"images": ["python"], "session": "s1"}
        assert node.post("/v1/nodes/heartbeat", json=beat).status_code == 200
        fed.wait_connected("n0", "manual")
        swarm_id = submit(fed.user, Replay())

        def mine() -> list[dict[str, Any]]:
            node.post("/v1/nodes/heartbeat", json=beat)
            items: list[dict[str, Any]] = node.get(
                "/v1/nodes/instructions", params={"wait": 1, "after": 0}
            ).json()
            return items

        (run,) = fed.wait("the run instruction", mine)
        iid = run["instance_id"]
        body = msgpack.packb(
            {
                "instance_id": iid,
                "op": "results.add",
                "args": {"tag": "y", "value": {"inline": encode(5)}},
            },
            use_bin_type=True,
        )
        headers = {"Content-Type": "application/msgpack"}
        for _ in range(2):
            assert node.post(f"/v1/instances/{iid}/started").json() == {"ok": True}
            reply = node.post("/v1/world", content=body, headers=headers)
            assert msgpack.unpackb(reply.content) == {"ok": None}
        for _ in range(2):
            resp = node.post(f"/v1/instances/{iid}/done", json={"ok": True})
            assert resp.json() == {"ok": True}

        status = fed.wait_done(swarm_id)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        assert status["tasks"]["worker"]["succeeded"] == 2
        assert global_value(fed.user, swarm_id, "total") == 10  # 5 from n0, 5 once
        assert global_value(fed.user, swarm_id, "nodes") == ["manual", "n0"]
        rows = results(fed.user, swarm_id, "y", alias="worker")
        assert sorted((r["node_id"], r["value"]) for r in rows) == [("manual", 5), ("n0", 5)]
