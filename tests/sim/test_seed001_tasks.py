"""Seed 001's task classes run in the simulator with only their import lines changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal
from shoal import Module, Swarm, Task

SEED001 = Path(__file__).parent.parent / "seeds" / "modules" / "seed001"
MODULES = SEED001.parent


class Seed001Swarm(Swarm):
    def __init__(self, method: str = "average") -> None:
        super().__init__()
        self.max_iterations = 3
        self.set_global("parameters", 2.0)
        self.set_global("model", "m0")
        self.set_global("model_parameters", [1.0, 2.0])
        self.set_global("hyperparameters", {"learning_rate": 0.5})
        self.set_global("aggregation_method", method)

        def task(path: Path, **kw: object) -> Task:
            return Task(Module(path, datasets=kw.pop("datasets", ())), **kw)  # type: ignore[arg-type]

        self.gradients = task(SEED001 / "gradients.py")
        # State lives per node: pin the optimizer to the node it first ran on.
        self.optimizer = task(SEED001 / "optimizer.py", method="any", fixed=True)
        self.my_task = task(SEED001 / "my_task.py", datasets=["training_data"])
        self.example = task(SEED001 / "example_task.py", datasets=["mnist"])
        self.standard = task(SEED001 / "standard_worker.py")
        self.local_results = task(SEED001 / "local_results.py")
        self.generic = task(SEED001 / "generic_aggregator.py", method="any")
        self.worker = task(MODULES / "worker")  # the seed's package module
        self.aggregator = task(MODULES / "aggregator.py", method="any")

    def execute(self) -> list[Task]:
        return [
            self.optimizer(self.gradients()),
            self.my_task(),
            self.example(),
            self.standard(),
            self.generic(self.local_results()),
            self.aggregator(self.worker()),
        ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    np.save(root / "training.npy", np.arange(6, dtype=np.float64))
    np.save(root / "mnist.npy", np.zeros((5, 28, 28), dtype=np.uint8))
    return {"training_data": root / "training.npy", "mnist": root / "mnist.npy"}


@pytest.mark.parametrize("executor", ["processes", "inline"])
def test_seed001_tasks_run(data: dict[str, Path], executor: str) -> None:
    run = shoal.simulate(Seed001Swarm(), nodes=3, datasets=data, executor=executor, workers=2)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    assert run.iterations == 3
    # StatefulOptimizer: state persists per node across iterations (one optimizer node)
    # -> steps 1, 2, 3; three gradient vectors of ones sum to 9.
    history = run.globals.history("parameters")
    assert history == {-1: 2.0, 0: 9.0, 1: 18.0, 2: 27.0}
    # MyTask read the parameters the optimizer wrote the iteration before it.
    outputs = run.results.select("output", alias="my_task")
    assert outputs == {f"node-0000{i}": 15.0 * 18.0 for i in range(3)}
    # ExampleTask saw the global, no gradients upstream, and the node's resources.
    seen = run.results.select("seen", alias="example")
    assert all(s[0] == "m0" and s[1] == 0 and s[2] >= 1 and s[2] == s[3] for s in seen.values())
    logs = run.logs(task="example")
    assert {r.message for r in logs if r.level != "warning"} == {
        "Starting computation",
        "Dataset shape: (5, 28, 28)",
    }
    # Its select("gradients") found nothing upstream: shoal says where the tag is, once
    # per instance (task 'gradients' stores it but is not upstream of 'example').
    warned = [r.message for r in logs if r.level == "warning"]
    assert len(warned) == 3 * 3 and all("task 'gradients' stor" in m for m in warned), warned
    # StandardWorker and GenericAggregator.
    assert run.results.select("model_update", alias="standard")["node-00001"] == [0.5, 1.5]
    assert run.globals["aggregated_result"] == 1.0  # mean of node indices 0, 1, 2
    # The seed's Aggregator stored the worker package's model params keyed by node.
    assert run.globals["global_model"] == {f"node-0000{i}": [0.0, 1.0] for i in range(3)}


def test_seed001_weighted_branch(data: dict[str, Path]) -> None:
    run = shoal.simulate(Seed001Swarm("weighted"), nodes=3, datasets=data, executor="inline")
    assert run.ok, run.reason
    assert run.globals["aggregated_result"] == pytest.approx((0 * 1 + 1 * 2 + 2 * 3) / 6)
