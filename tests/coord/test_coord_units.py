"""Coordinator pieces without processes: the event log codec and the node queues."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest

from shoal import Module, Swarm, Task
from shoal._api.schemas import CancelInstruction, RunInstruction
from shoal._coord.events import decode_event, encode_event
from shoal._coord.notify import NodeQueues
from shoal._define.compile import compile_swarm
from shoal._engine.messages import (
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InstanceSucceeded,
    NextIterScheduled,
    NodeJoined,
    NodeLost,
    NodeRestarted,
    StopRequested,
    StopSwarmCalled,
    SwarmSubmitted,
    TimerFired,
)
from shoal._errors import ShoalError


class _One(Swarm):
    max_iterations = 1

    def __init__(self) -> None:
        self.t = Task(Module("def main():\n    pass\n", name="t"), alias="t")

    def execute(self) -> Task:
        return self.t()


def test_every_event_round_trips_through_the_log_codec() -> None:
    plan = compile_swarm(_One()).plan
    events = [
        NodeJoined("n1", 1.5, frozenset({"a", "b"}), True, frozenset({"python"})),
        NodeJoined("n2", 2.0),
        NodeLost("n1", 3.0, "gone"),
        NodeRestarted("n2", 3.5, "the node agent restarted"),
        SwarmSubmitted("s", plan, 4.0, seed=7),
        InstanceStarted("s/0/t/0/0", 5.0),
        InstanceSucceeded("s/0/t/0/0", 6.0),
        InstanceFailed("s/0/t/0/1", 7.0, "boom", "tb", FailureKind.CRASH),
        StopSwarmCalled("s/0/t/0/0", 8.0),
        NextIterScheduled("s/0/t/0/0", 9.0, "t", ("n1", "n2")),
        StopRequested("s", 10.0, "user"),
        TimerFired(11.0),
    ]
    for event in events:
        assert decode_event(encode_event(event)) == event


def test_a_damaged_log_record_fails_loudly() -> None:
    with pytest.raises(ShoalError, match="unknown format"):
        decode_event(msgpack.packb({"v": 99, "type": "TimerFired", "now": 1.0}))
    with pytest.raises(ShoalError, match="bad field 'node_id'"):
        decode_event(msgpack.packb({"v": 1, "type": "NodeLost", "now": 1.0, "node_id": 3}))
    with pytest.raises(ShoalError, match="not msgpack"):
        decode_event(b"\xc1")


def _run(instance_id: str) -> RunInstruction:
    return RunInstruction(
        swarm_id="s",
        instance_id=instance_id,
        alias="t",
        iteration=0,
        attempt=0,
        module="sha256:" + "0" * 64,
        datasets=[],
        image="python",
        timeout_s=None,
    )


def test_unacknowledged_instructions_are_delivered_again() -> None:
    async def scenario() -> None:
        q = NodeQueues()
        q.push_run("n", _run("i1"))
        q.push_run("n", _run("i1"))  # still pending: deduplicated
        first = await q.take("n", 0, after=0)
        assert [i.instance_id for i in first] == ["i1"]
        # The answer was lost: a poll that does not acknowledge it gets it again.
        again = await q.take("n", 0, after=0)
        assert again == first
        assert await q.take("n", 0, after=first[0].seq) == []
        # A cancel of a run never handed out just drops it.
        q.push_run("n", _run("i2"))
        q.cancel("n", "i2", "swarm ended")
        assert await q.take("n", 0) == []
        # A cancel of a run handed out is sent.
        q.push_run("n", _run("i3"))
        (run,) = await q.take("n", 0)
        q.cancel("n", "i3", "swarm ended")
        (cancel,) = await q.take("n", 0.1, after=run.seq)
        assert isinstance(cancel, CancelInstruction) and cancel.seq > run.seq

    asyncio.run(scenario())


def test_an_ack_from_before_a_restart_never_drops_new_instructions() -> None:
    async def scenario() -> None:
        q = NodeQueues()
        q.push_run("n", _run("i1"))
        # The agent acknowledges a seq from the previous coordinator, higher than any
        # seq this one issued (its clock went back): i1 was never handed out.
        stale = 10**18
        (run,) = await q.take("n", 0, after=stale)
        assert run.instance_id == "i1" and run.seq < stale
        assert await q.take("n", 0, after=stale) == []  # now it was handed out: acked

    asyncio.run(scenario())


def test_a_long_poll_wakes_when_an_instruction_arrives_from_another_thread() -> None:
    async def scenario() -> float:
        q = NodeQueues()
        loop = asyncio.get_running_loop()
        cancel = CancelInstruction(instance_id="i", reason="r")
        loop.call_later(0.1, lambda: loop.run_in_executor(None, q.push, "n", cancel))
        start = loop.time()
        items = await q.take("n", 10)
        assert [i.kind for i in items] == ["cancel"]
        return loop.time() - start

    assert asyncio.run(scenario()) < 5


def test_the_app_runs_in_a_thread_over_a_memory_store(tmp_path: Path) -> None:
    import threading

    import httpx
    import uvicorn
    from helpers import free_port, poll_for

    from shoal._coord import create_app
    from shoal._store.memory import MemoryStore

    compiled = compile_swarm(_One())
    body = {
        "plan": compiled.plan.to_json(),
        "bundles": {d: b.data for d, b in compiled.bundles.items()},
    }
    app = create_app(MemoryStore(), tmp_path / "blobs", "join", "user", heartbeat_timeout_s=5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:

        def started() -> bool:
            assert thread.is_alive(), "the server thread ended"
            return bool(server.started)

        poll_for(started, 30, "the server to start", interval=0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            enrolled = http.post("/v1/nodes/enrol", json={"join_token": "join", "node_id": "n1"})
            node = {"Authorization": f"Bearer {enrolled.json()['credential']}"}
            user = {"Authorization": "Bearer user", "Content-Type": "application/msgpack"}
            resp = http.post("/v1/swarms", content=msgpack.packb(body), headers=user)
            swarm_id = resp.json()["swarm_id"]
            (run,) = http.get("/v1/nodes/instructions", params={"wait": 1}, headers=node).json()
            assert run["instance_id"] == f"{swarm_id}/0/t/0/0"
            assert run["global_versions"] == {}
            iid = run["instance_id"]
            done = http.post(f"/v1/instances/{iid}/done", json={"ok": True}, headers=node)
            assert done.json() == {"ok": True}
            status = http.get(f"/v1/swarms/{swarm_id}", headers=user).json()
            assert status["status"] == "succeeded"
            counts = {"scheduled": 1, "running": 0, "succeeded": 1, "failed": 0}
            (module,) = {m.name for m in compiled.plan.modules.values()}
            assert status["tasks"] == {"t": {**counts, "module": module, "version": None}}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_events_fed_together_are_one_append_and_a_rejection_stops_none_after_it() -> None:
    from shoal._coord.driver import Coordinator
    from shoal._engine import EngineError
    from shoal._store.memory import MemoryStore

    store = MemoryStore()
    coord = Coordinator(store)
    # The engine knows no such instance: it rejects the first; the second still counts,
    # as it would when the log is replayed.
    with pytest.raises(EngineError):
        coord.feed(InstanceSucceeded("s/0/t/0/0", 1.0), NodeJoined("n1", 2.0))
    assert coord.engine.node("n1") is not None
    assert [decode_event(p) for _, p in store.events()] == [
        InstanceSucceeded("s/0/t/0/0", 1.0),
        NodeJoined("n1", 2.0),
    ]
    replayed = Coordinator(store)
    replayed.recover()
    assert replayed.engine.node("n1") is not None
