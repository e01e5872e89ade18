"""On-demand tasks end to end in the simulator: a controller's ``world.invoke`` runs real
task code on virtual nodes, inline (``shoal.testing.Federation``) and in the process
pool (``shoal.simulate``) (docs/engine.md, "On-demand tasks")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import task_module

import shoal
from shoal import Swarm, Task
from shoal.testing import Federation

pytestmark = [pytest.mark.timeout(120)]

ROUNDS = 4
NODES = 4

# A node's data and five gradient steps of least squares from the model it is given.
TRAIN = """
def train(node_id, w):
    rng = np.random.default_rng(int(node_id[-5:]) + 1)
    n = 20 + 10 * int(node_id[-1])
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.01 * rng.normal(size=n)
    w = np.array(w, dtype=float)
    for _ in range(5):
        w = w - 0.1 * X.T @ (X @ w - y) / n
    return {"w": w, "n": n}


def average(updates):
    total = sum(u["n"] for u in updates.values())
    return sum(updates[k]["w"] * (updates[k]["n"] / total) for k in sorted(updates))
"""
IMPORTS = "import os, sys, time\nimport numpy as np\n" + TRAIN

# The graph's FedAvg: every node trains from the global model, one node averages.
GRAPH_WORKER = """
self.world.results.add("update", train(self.world.node_id, self.world.globals["w"]))
"""
GRAPH_AGG = 'self.world.globals["w"] = average(self.world.results.select("update"))'


class GraphFedAvg(Swarm):
    max_iterations = ROUNDS

    def __init__(self) -> None:
        self.set_global("w", [0.0, 0.0, 0.0])
        self.worker = Task(task_module(GRAPH_WORKER, "GW", imports=IMPORTS), alias="worker")
        self.agg = Task(task_module(GRAPH_AGG, "GA", imports=IMPORTS), alias="agg", method="any")

    def execute(self) -> Task:
        return self.agg(self.worker())


# The same FedAvg written by hand as a loop in one controller instance.
WORKER = "self.world.reply(train(self.world.node_id, self.world.inputs))"
CONTROLLER = """
w = np.zeros(3)
for r in range(ROUNDS):
    updates = self.world.invoke("train", inputs=w)
    assert sorted(updates) == sorted(NODE_IDS), updates
    w = average(updates)
    self.logger.info(f"round {r}: {w}")
self.world.results.add("w", w)
"""


class ControllerFedAvg(Swarm):
    max_iterations = 1

    def __init__(
        self,
        controller: str = CONTROLLER,
        worker: str = WORKER,
        retries: int = 0,
        timeout: float | None = None,
        rounds: int = ROUNDS,
    ) -> None:
        imports = IMPORTS + f"\nROUNDS = {rounds}\nNODE_IDS = {_node_ids()!r}\n"
        self.train = Task(
            task_module(worker, "W", imports=imports),
            alias="train",
            on_demand=True,
            retries=retries,
            timeout=timeout,
        )
        self.ctl = Task(
            task_module(controller, "C", imports=imports),
            alias="ctl",
            specified_ids=["node-00000"],
            timeout=60,
        )

    def execute(self) -> Task:
        return self.ctl()


def _node_ids() -> list[str]:
    return [f"node-{i:05d}" for i in range(NODES)]


def _graph_model() -> np.ndarray:
    run = Federation(nodes=NODES).run(GraphFedAvg())
    assert run.ok, run.reason
    return np.asarray(run.globals["w"])


def test_controller_loop_gives_the_graph_fedavg_model_inline() -> None:
    run = Federation(nodes=NODES).run(ControllerFedAvg())
    assert run.ok, run.reason
    (w,) = run.results.select("w", alias="ctl", iteration=0).values()
    expected = _graph_model()
    assert np.array_equal(w, expected), (w, expected)
    assert not np.allclose(expected, 0.0)  # it learned something
    # ROUNDS calls, each one instance per node, numbered c0.., c1.. under the caller.
    logs = [r.message for r in run.logs(task="ctl")]
    assert sum(m.startswith("round ") for m in logs) == ROUNDS, logs


def test_controller_loop_in_the_process_pool(tmp_path: Path) -> None:
    run = shoal.simulate(
        ControllerFedAvg(), nodes=NODES, workers=2, run_dir=tmp_path / "run", seed=0
    )
    assert run.ok, run.reason
    (w,) = run.results.select("w", alias="ctl", iteration=0).values()
    assert np.array_equal(w, _graph_model())


def test_a_single_worker_pool_still_runs_the_invoked_instances(tmp_path: Path) -> None:
    # The controller holds the only worker while it waits: another takes its place.
    run = shoal.simulate(
        ControllerFedAvg(rounds=2), nodes=NODES, workers=1, run_dir=tmp_path / "run"
    )
    assert run.ok, run.reason


FAIL_ON_1 = """
if self.world.node_id == "node-00001":
    raise RuntimeError("boom on 1")
self.world.reply(train(self.world.node_id, self.world.inputs))
"""


def test_a_failing_invoked_instance_fails_the_call_listing_it() -> None:
    controller = """
try:
    self.world.invoke("train", inputs=np.zeros(3))
except Exception as e:
    self.world.results.add("error", {"type": type(e).__name__, "code": e.code,
        "message": e.message, "failures": e.failures})
"""
    run = Federation(nodes=NODES).run(ControllerFedAvg(controller, FAIL_ON_1))
    assert run.ok, run.reason
    (err,) = run.results.select("error", alias="ctl", iteration=0).values()
    assert err["type"] == "InvokeError" and err["code"] == "invoke.failed"
    assert "'train'" in err["message"] and "boom on 1" in err["message"], err
    assert [f["node_id"] for f in err["failures"]] == ["node-00001"]
    assert err["failures"][0]["kind"] == "error"


def test_min_results_goes_on_without_a_failed_node() -> None:
    controller = """
got = self.world.invoke("train", inputs=np.zeros(3), min_results=3)
self.world.results.add("nodes", sorted(got))
"""
    run = Federation(nodes=NODES).run(ControllerFedAvg(controller, FAIL_ON_1))
    assert run.ok, run.reason
    (nodes,) = run.results.select("nodes", alias="ctl", iteration=0).values()
    assert nodes == ["node-00000", "node-00002", "node-00003"]


def test_a_crashed_invoked_instance_is_retried() -> None:
    fed = Federation(nodes=NODES)
    fed.inject("crash", node="node-00002", task="train", attempt=0)
    controller = """
got = self.world.invoke("train", inputs=np.zeros(3))
self.world.results.add("nodes", sorted(got))
"""
    run = fed.run(ControllerFedAvg(controller, retries=1))
    assert run.ok, run.reason
    (nodes,) = run.results.select("nodes", alias="ctl", iteration=0).values()
    assert nodes == _node_ids()
    stories = "\n".join(run.story("sim/0/train/c0.2/0"))
    assert "crash" in stories, stories


def test_a_hung_invoked_instance_times_the_call_out() -> None:
    fed = Federation(nodes=NODES)
    fed.inject("hang", node="node-00003", task="train", attempt=None)
    controller = """
try:
    self.world.invoke("train", inputs=np.zeros(3), timeout=5)
except Exception as e:
    self.world.results.add("error", e.message)
"""
    run = fed.run(ControllerFedAvg(controller))
    assert run.ok, run.reason
    (msg,) = run.results.select("error", alias="ctl", iteration=0).values()
    assert "timed out" in msg and "'train'" in msg, msg


def test_an_unknown_or_graph_task_fails_the_call_at_once() -> None:
    controller = """
out = []
for alias in ("nope", "ctl"):
    try:
        self.world.invoke(alias)
    except Exception as e:
        out.append(e.message)
self.world.results.add("errors", out)
"""
    run = Federation(nodes=NODES).run(ControllerFedAvg(controller))
    assert run.ok, run.reason
    (errors,) = run.results.select("errors", alias="ctl", iteration=0).values()
    assert "'nope' is not a task of the swarm" in errors[0], errors
    assert "'ctl' is not declared on_demand" in errors[1], errors


def test_named_nodes_and_the_pool_failure_path(tmp_path: Path) -> None:
    controller = """
got = self.world.invoke("train", nodes=["node-00002", "node-00003"], inputs=np.zeros(3))
self.world.results.add("nodes", sorted(got))
try:
    self.world.invoke("train", inputs=np.zeros(3))
except Exception as e:
    self.world.results.add("error", [type(e).__name__, e.failures])
"""
    run = shoal.simulate(
        ControllerFedAvg(controller, FAIL_ON_1), nodes=NODES, workers=2, run_dir=tmp_path / "r"
    )
    assert run.ok, run.reason
    (nodes,) = run.results.select("nodes", alias="ctl", iteration=0).values()
    assert nodes == ["node-00002", "node-00003"]
    ((kind, failures),) = run.results.select("error", alias="ctl", iteration=0).values()
    assert kind == "InvokeError" and [f["node_id"] for f in failures] == ["node-00001"]
