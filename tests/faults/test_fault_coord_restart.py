"""The coordinator killed with SIGKILL in the middle of two swarms and restarted on the
same store (SQLite and PostgreSQL): both swarms resume where they were, nothing that
was acknowledged before the kill is lost, the node agents reconnect by themselves, and
the final results equal those of a run without the fault."""

from __future__ import annotations

import json
import time
from collections import Counter as Multiset
from typing import Any

import pytest
from deploy_harness import global_value, results, submit
from fault_harness import Fed
from fault_swarms import CHAIN_KEYS, Chain, Counter, fault_free

pytestmark = pytest.mark.timeout(150)

NODES = ("n0", "n1", "n2")


def snapshot(fed: Fed, swarm_id: str, tags: dict[str, str]) -> dict[str, Any]:
    """What the coordinator has acknowledged about a swarm, read through the API."""
    user = fed.user
    status = fed.status(swarm_id)
    out: dict[str, Any] = {
        "iteration": status["iteration"],
        "logs": [
            (r["seq"], r["node_id"], r["alias"], r["iteration"], r["message"])
            for r in fed.logs(swarm_id)
        ],
        "metrics": Multiset(
            (m["name"], m["value"], m["step"], m["node_id"], m["iteration"])
            for m in user.get(f"/v1/swarms/{swarm_id}/metrics").json()
        ),
        "results": set(),
    }
    for alias, tag in tags.items():
        for it in range(status["iteration"] + 1):
            for r in results(user, swarm_id, tag, alias=alias, iteration=it):
                out["results"].add((alias, it, r["node_id"], json.dumps(r["value"])))
    return out


def test_coordinator_sigkill_and_restart_resumes_every_swarm_and_loses_nothing(
    db_url: str, fed: Fed
) -> None:
    expected = fault_free(Chain(iterations=3), nodes=3)
    fed.start(db=db_url)
    for n in NODES:
        fed.node(n)
    fed.wait_connected(*NODES)
    credentials = {n: fed.nodes[n].credential() for n in NODES}
    chain = submit(fed.user, Chain(iterations=3, sleep=1.0, retries=1))
    counter = submit(fed.user, Counter(iterations=3, sleep=1.0))
    # Mid-iteration of both: workers sleeping, earlier iterations' data acknowledged.
    fed.wait_log(chain, "working: iteration 1 on ")
    fed.wait("counter in iteration 1", lambda: fed.status(counter)["iteration"] >= 1)
    before = {
        chain: snapshot(fed, chain, {"worker": "y"}),
        counter: snapshot(fed, counter, {"counter": "runs"}),
    }
    nodes_before = fed.node_rows()
    history_before = global_value(fed.user, chain, "history")
    assert len(history_before) >= 1

    fed.kill_coordinator()
    fed.restart_coordinator()
    # The replay counts every node as just seen; only an agent can be seen after this.
    restarted = time.time()
    # Every swarm resumes where it was: not from iteration 0.
    for swarm_id, seen in before.items():
        assert fed.status(swarm_id)["iteration"] >= seen["iteration"]
    fed.wait_connected(*NODES, since=restarted)  # the agents came back by themselves

    done = {s: fed.wait_done(s, timeout=90) for s in (chain, counter)}
    for status in done.values():
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        assert status["reason"] == "max_iterations reached (3)"
        assert status["failures"] == [], json.dumps(status, indent=1)

    # Nothing acknowledged before the kill is lost.
    after = {
        chain: snapshot(fed, chain, {"worker": "y"}),
        counter: snapshot(fed, counter, {"counter": "runs"}),
    }
    for swarm_id, seen in before.items():
        now = after[swarm_id]
        assert set(seen["logs"]) <= set(now["logs"])
        assert not seen["metrics"] - now["metrics"]
        assert seen["results"] <= now["results"]
    nodes_after = fed.node_rows()
    for node_id, row in nodes_before.items():
        assert nodes_after[node_id]["datasets"] == row["datasets"]
        assert nodes_after[node_id]["connected"]

    # The same end as without the fault (the globals written before the kill included).
    assert global_value(fed.user, chain, "history")[: len(history_before)] == history_before
    assert {k: global_value(fed.user, chain, k) for k in CHAIN_KEYS} == expected
    for it in range(3):  # local state carried across iterations and the restart
        rows = results(fed.user, counter, "runs", alias="counter", iteration=it)
        assert sorted((r["node_id"], r["value"]) for r in rows) == [(n, it + 1) for n in NODES]

    # Work in flight at the kill was not done again: each instance ran once.
    for swarm_id, alias, tag in ((chain, "worker", "y"), (counter, "counter", "runs")):
        for it in range(3):
            ran = sorted(r["node_id"] for r in fed.logs(swarm_id, task=alias, iteration=it))
            got = sorted(
                r["node_id"] for r in results(fed.user, swarm_id, tag, alias=alias, iteration=it)
            )
            assert ran == got, (alias, it, ran, got)

    # The nodes kept their identity: no new enrolment, the same credentials.
    for n in NODES:
        assert fed.nodes[n].credential() == credentials[n]
        assert fed.nodes[n].log().count("enrolled node") == 1
