"""Hostile requests at the coordinator while a swarm runs on real node agents.

An audit sent one 9 MB unauthenticated enrolment (3 million list items): it held the
coordinator's event loop for 35-40 s and produced a 164 MB error; every node was lost
and a running swarm with retries failed. Here the same request, streamed and declared,
with a 1M-key msgpack map and a deeply nested plan on the user route, is sent over and
over while a swarm runs on three agents with a heartbeat timeout of 2 s: every one is
refused at once with a small error, no node is lost, and the swarm ends exactly as
without the attack.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import msgpack
import pytest
from deploy_harness import global_value, submit
from fault_harness import Fed
from fault_swarms import CHAIN_KEYS, Chain, fault_free

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NODES = ("n0", "n1", "n2")
HUGE_ENROL = b'{"join_token":"x","node_id":"a","datasets":[' + b",".join([b"1"] * 3_000_000) + b"]}"
MSGPACK = {"Content-Type": "application/msgpack"}


class Attacker:
    """Sends the hostile requests in a loop, from a thread, until stopped (at most
    ``rounds`` rounds); records each answer's status, size and time."""

    def __init__(self, url: str, user_token: str, rounds: int = 20) -> None:
        self.url = url
        self.user = {"Authorization": f"Bearer {user_token}", **MSGPACK}
        self.rounds = rounds
        self.answers: list[tuple[str, int, int, float]] = []  # what, status, bytes, s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.map = msgpack.packb({"plan": "{}", "bundles": {f"k{i}": b"" for i in range(10**6)}})
        self.deep = msgpack.packb({"plan": "[" * 100_000 + "]" * 100_000})

    def _send(self, http: httpx.Client, what: str, path: str, **kw: object) -> None:
        t0 = time.monotonic()
        resp = http.post(f"{self.url}{path}", **kw)  # type: ignore[arg-type]
        self.answers.append((what, resp.status_code, len(resp.content), time.monotonic() - t0))

    def _run(self) -> None:
        def chunks() -> Iterator[bytes]:
            for i in range(0, len(HUGE_ENROL), 65536):
                yield HUGE_ENROL[i : i + 65536]

        json_type = {"Content-Type": "application/json"}
        with httpx.Client(timeout=90) as http:
            for _ in range(self.rounds):
                if self.stop.is_set():
                    return
                enrol = "/v1/nodes/enrol"
                self._send(http, "enrol", enrol, content=HUGE_ENROL, headers=json_type)
                self._send(http, "enrol streamed", enrol, content=chunks(), headers=json_type)
                self._send(http, "1M-key map", "/v1/swarms", content=self.map, headers=self.user)
                self._send(http, "deep plan", "/v1/swarms", content=self.deep, headers=self.user)


def test_hostile_requests_during_a_swarm_lose_no_node(fed: Fed) -> None:
    swarm = Chain(iterations=3, sleep=0.7, slow=None, retries=1)
    expected = fault_free(Chain(iterations=3), nodes=3)
    fed.start()
    for n in NODES:
        fed.node(n)
    fed.wait_connected(*NODES)
    assert fed.coord is not None
    swarm_id = submit(fed.user, swarm)
    fed.wait_log(swarm_id, "working: iteration 0")
    attacker = Attacker(fed.coord.url, fed.coord.user_token)
    attacker.thread.start()
    try:
        status = fed.wait_done(swarm_id, timeout=90)
    finally:
        attacker.stop.set()
        attacker.thread.join(timeout=100)

    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert status["failures"] == [], json.dumps(status["failures"], indent=1)
    assert " lost: " not in fed.coord.output(), fed.diagnostics()
    assert {k: global_value(fed.user, swarm_id, k) for k in CHAIN_KEYS} == expected
    assert len(attacker.answers) >= 4
    expected_status = {"enrol": 413, "enrol streamed": 413, "1M-key map": 413, "deep plan": 422}
    for what, code, size, took in attacker.answers:
        assert code == expected_status[what], (what, code)
        assert size < 1000, (what, size)  # the error body was 164 MB
        assert took < 10, (what, took)
    rows = fed.node_rows()
    assert all(rows[n]["connected"] for n in NODES), rows
