"""``world.invoke`` on a real coordinator and node agents (processes on loopback): a
controller's FedAvg loop over an on-demand task, and a failed invoked instance
reported to the controller or left out per ``min_results``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deploy_harness import deployment, results, submit, wait_nodes, wait_status
from helpers import task_module

from shoal import Swarm, Task

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # ~70 s: three swarms on real nodes

NODES = ["n0", "n1", "n2"]
ROUNDS = 3

TRAIN = """
def train(node_id, w):
    rng = np.random.default_rng(sum(map(ord, node_id)))
    n = 20 + 10 * int(node_id[-1])
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    w = np.array(w, dtype=float)
    for _ in range(5):
        w = w - 0.1 * X.T @ (X @ w - y) / n
    return {"w": w, "n": n}


def average(updates):
    total = sum(u["n"] for u in updates.values())
    return sum(updates[k]["w"] * (updates[k]["n"] / total) for k in sorted(updates))
"""
IMPORTS = "import os, sys, time\nimport numpy as np\n" + TRAIN

WORKER = """
if self.world.node_id == FAIL_ON:
    raise RuntimeError(f"boom on {FAIL_ON}")
self.world.reply(train(self.world.node_id, self.world.inputs))
"""
CONTROLLER = """
w = np.zeros(3)
for r in range(ROUNDS):
    try:
        updates = self.world.invoke("train", inputs=w, min_results=MIN)
    except Exception as e:
        self.world.results.add("error", {"type": type(e).__name__, "message": e.message,
            "failures": e.failures})
        raise
    self.world.results.add(f"nodes{r}", sorted(updates))
    w = average(updates)
self.world.results.add("w", w)
"""


class Controlled(Swarm):
    max_iterations = 1

    def __init__(self, fail_on: str = "", min_results: int | None = None) -> None:
        imports = IMPORTS + f"\nROUNDS = {ROUNDS}\nFAIL_ON = {fail_on!r}\nMIN = {min_results!r}\n"
        self.train = Task(
            task_module(WORKER, "W", imports=imports), alias="train", on_demand=True, timeout=30
        )
        self.ctl = Task(
            task_module(CONTROLLER, "C", imports=imports),
            alias="ctl",
            specified_ids=["n0"],
            timeout=60,
        )

    def execute(self) -> Task:
        return self.ctl()


def _expected(nodes: list[str]) -> np.ndarray:
    scope: dict[str, object] = {"np": np}
    exec(TRAIN, scope)  # the task's own code, run here
    w = np.zeros(3)
    for _ in range(ROUNDS):
        w = scope["average"]({n: scope["train"](n, w) for n in nodes})  # type: ignore[operator]
    return w


def test_a_controller_loop_invokes_on_demand_tasks_on_real_nodes(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        for node_id in NODES:
            d.node(coord, node_id)
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, NODES)

        ok = submit(user, Controlled())
        status = wait_status(user, ok, timeout=90)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        (row,) = results(user, ok, "w", alias="ctl")
        assert np.allclose(row["value"], _expected(NODES), rtol=0, atol=1e-12), row

        # n2 fails every time: with min_results=2 the loop goes on without it ...
        partial = submit(user, Controlled(fail_on="n2", min_results=2))
        status = wait_status(user, partial, timeout=90)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        (nodes,) = results(user, partial, "nodes0", alias="ctl")
        assert nodes["value"] == ["n0", "n1"]
        (row,) = results(user, partial, "w", alias="ctl")
        assert np.allclose(row["value"], _expected(["n0", "n1"]), rtol=0, atol=1e-12)

        # ... and by default the call fails, naming the node and its error.
        failed = submit(user, Controlled(fail_on="n2"))
        status = wait_status(user, failed, timeout=90)
        assert status["status"] == "failed", json.dumps(status, indent=1)
        (err,) = results(user, failed, "error", alias="ctl")
        assert err["value"]["type"] == "InvokeError", err
        assert "'train'" in err["value"]["message"] and "boom on n2" in err["value"]["message"]
        assert [f["node_id"] for f in err["value"]["failures"]] == ["n2"]
