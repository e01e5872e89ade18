"""A swarm's values have a storage quota (issue #14, point 7): a real coordinator started
with ``--swarm-quota-mb 1`` and a real node agent; a task that stores more than that as
blobs fails with the reason, the swarm ends, and a swarm within the quota succeeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_harness import deployment, submit, wait_nodes, wait_status
from helpers import task_module

from shoal import Swarm, Task

pytestmark = pytest.mark.timeout(180)

ADD = """
for i in range(COUNT):  # 400 KB each: over the 64 KiB inline limit, so each is a blob
    self.world.results.add(f"v{i}", np.full(50_000, float(i)))
"""


class Adder(Swarm):
    def __init__(self, count: int) -> None:
        self.max_iterations = 1
        body = f"COUNT = {count}\n" + ADD
        module = task_module(body, f"Add{count}", imports="import numpy as np")
        self.t = Task(module, alias="t", specified_ids=["q-a"])

    def execute(self) -> Task:
        return self.t()


def test_a_swarm_past_its_quota_fails_with_the_reason(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        coord = d.coordinator(extra=["--swarm-quota-mb", "1"])
        d.node(coord, "q-a", extra='executor = "process"')
        with coord.user() as user:
            wait_nodes(user, ["q-a"])
            within = wait_status(user, submit(user, Adder(2)), timeout=90)  # 0.8 MB
            assert within["status"] == "succeeded", within
            over = wait_status(user, submit(user, Adder(4)), timeout=90)  # 1.6 MB
    assert over["status"] == "failed", over
    (failure,) = over["failures"]
    assert "would store" in failure["error"], failure
    assert "over its quota of 1048576 bytes" in failure["error"], failure
