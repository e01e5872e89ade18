"""The node agent's calls retry while the coordinator is unreachable, but an instance's
calls give up at its cancel or deadline (so the agent can still stop its task), while
other threads' calls keep retrying."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import free_port

from shoal._node.client import Abandoned, CoordinatorClient, Stopped, abandon_when

pytestmark = pytest.mark.timeout(30)


def test_calls_of_an_abandoned_instance_stop_retrying_and_others_do_not() -> None:
    stop = threading.Event()
    client = CoordinatorClient(f"http://127.0.0.1:{free_port()}", stop, retry_max_s=0.2)
    give_up = threading.Event()
    # Another thread's call (a report) retries on: nobody abandoned it.
    other: list[BaseException] = []

    def report() -> None:
        try:
            client.call("POST", "/v1/instances/x/done", json={"ok": True})
        except BaseException as e:
            other.append(e)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        started = time.monotonic()
        threading.Timer(0.5, give_up.set).start()
        reason = "the instance was cancelled"
        with abandon_when(lambda: reason if give_up.is_set() else None):
            with pytest.raises(Abandoned, match="gave up calling the coordinator: the instance"):
                client.call("POST", "/v1/world", content=b"x")
            # Past that point every call gives up at once, without a try.
            with pytest.raises(Abandoned):
                client.call("GET", "/v1/health")
        assert 0.4 < time.monotonic() - started < 2.0
        assert reporter.is_alive() and not other  # still retrying
    finally:
        stop.set()
        reporter.join(5)
        client.close()
    assert len(other) == 1 and isinstance(other[0], Stopped)
