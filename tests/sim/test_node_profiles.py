"""Heterogeneous simulated fleets (#15 points 4-6): node profiles with GPUs, CPUs and
memory; ``gpu=True`` and ``resources`` placed only where they fit; seed 001's adaptive
and resource-aware modules; ``shoal simulate --node-profile``.

The swarms are written as seeds 001 and 002 write them; only the imports changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shoal
from shoal import Module, NodeProfile, ShoalError, Swarm, Task

SEED001 = Path(__file__).parent.parent / "seeds" / "modules" / "seed001"

CODE = """
from shoal.runtime import Task

class Worker(Task):
    def run(self):
        res = self.local.get_resources()
        self.world.results.add("memory", res.memory)

def main():
    Worker().run()
"""

GI = 2**30

# 100 nodes: 45 with 8Gi, 45 with 32Gi, 10 with a GPU (24Gi) and 64Gi.
FLEET = [
    NodeProfile(count=45, name="small", cpu=4, memory="8Gi"),
    NodeProfile(count=45, name="large", cpu=8, memory="32Gi"),
    {"count": 10, "name": "gpu", "cpu": 16, "memory": "64Gi", "gpus": 1, "gpu_memory": "24Gi"},
]


class FleetSwarm(Swarm):
    """Seed 001's resource-aware module on GPU nodes, seed 002's module with resources."""

    max_iterations = 1
    placement_timeout = 30

    def __init__(self, memory: str = "16Gi") -> None:
        super().__init__()
        self.memory = memory

    def execute(self) -> list[Task]:
        # Seed 002, "Resource Allocation": a task that requires GPU nodes.
        optimized = Task(
            module=Module(SEED001 / "optimized_task.py", "pytorch", name="optimized"),
            method="all",
            gpu=True,  # Require GPU nodes
            alias="optimized",
        )
        # Seed 002, "Module Packaging": resource requirements on the module.
        module = Module(
            name="my_module",
            python_program=CODE,  # Python code or file
            image="manta:latest",  # Container image
            requirements=["numpy"],  # Dependencies
            resources={"cpu": 2, "memory": self.memory},  # Resource requirements
        )
        big = Task(module=module, method="all", alias="big")
        return [optimized(), big()]


def test_a_heterogeneous_fleet_places_gpu_and_memory_tasks_only_where_they_fit() -> None:
    run = shoal.simulate(FleetSwarm(), nodes=FLEET, executor="inline")
    assert run.ok, (run.reason, [f.error for f in run.failures])
    plans = run.results.select("plan", alias="optimized")
    assert sorted(plans) == [f"gpu-{i:05d}" for i in range(10)]
    # OptimizedTask saw its node's GPU: 24Gi -> a batch of 96, on cuda.
    assert all(p == {"batch_size": 96, "device": "cuda"} for p in plans.values())
    memory = run.results.select("memory", alias="big")
    assert sorted(memory) == sorted(
        [f"large-{i:05d}" for i in range(45)] + [f"gpu-{i:05d}" for i in range(10)]
    )
    assert set(memory.values()) == {32 * GI, 64 * GI}


def test_an_unplaceable_task_fails_at_once_naming_the_shortfall() -> None:
    start = time.monotonic()
    run = shoal.simulate(
        FleetSwarm(memory="128Gi"), nodes=FLEET, executor="inline", raise_on_failure=False
    )
    took = time.monotonic() - start
    assert not run.ok
    assert took < 20  # at once: never the 30 s placement timeout
    reason = run.reason
    assert "task 'big'" in reason and "(no node can join: the node set is fixed)" in reason
    assert "placement timeout of 0s" not in reason
    assert "nodes small-00000, small-00001" in reason and "has 8Gi memory, needs 128Gi" in reason
    assert "has 32Gi memory, needs 128Gi" in reason and "has 64Gi memory, needs 128Gi" in reason


def test_a_gpu_task_on_a_fleet_without_gpus_names_the_missing_gpu() -> None:
    # Seed 002, "Resource Allocation", on nodes that have none.
    class Half(Swarm):
        max_iterations = 1
        placement_timeout = 30

        def execute(self) -> Task:
            module = Module(SEED001 / "optimized_task.py", "pytorch")
            task = Task(
                module=module,
                method="any",
                maximum=0.5,  # Use 50% of available nodes
                gpu=True,  # Require GPU nodes
            )
            return task()

    run = shoal.simulate(Half(), nodes=3, executor="inline", raise_on_failure=False)
    assert not run.ok
    assert "no GPU" in run.reason and "placement timeout of 0s" not in run.reason
    # The same swarm on a fleet with GPUs takes half of the GPU nodes.
    fleet = [NodeProfile(count=4), NodeProfile(count=4, gpus=1, gpu_memory="16Gi")]
    run = shoal.simulate(Half(), nodes=fleet, executor="inline")
    assert run.ok, run.reason
    (alias,) = run.plan.sinks
    assert sorted(run.results.select("plan", alias=alias)) == ["node-00004", "node-00005"]


def test_seed001_adaptive_worker_adapts_to_its_nodes_profile() -> None:
    class Adaptive(Swarm):
        max_iterations = 1

        def execute(self) -> Task:
            return Task(Module(SEED001 / "adaptive_worker.py"), method="all")()

    fleet = [
        NodeProfile(name="far", rtt_ms=250.0),  # a slow link
        NodeProfile(name="lossy", rtt_ms=20.0, loss=0.6),
        NodeProfile(name="busy", cpu_usage=0.95, memory_usage=0.5),
        NodeProfile(name="idle", cpu_usage=0.1, rtt_ms=5.0),
    ]
    run = shoal.simulate(Adaptive(), nodes=fleet, executor="process", workers=2)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    (alias,) = run.plan.sinks
    assert run.results.select("strategy", alias=alias) == {
        "far": "local rounds +3",
        "lossy": "local rounds +3",
        "busy": "lightweight",
        "idle": "standard",
    }
    seen = run.results.select("seen", alias=alias)
    assert seen["far"]["rtt_s"] == 0.25 and seen["far"]["quality"] == pytest.approx(0.1 / 0.35)
    assert seen["lossy"]["loss"] == 0.6
    assert seen["busy"]["cpu_usage"] == 0.95 and seen["busy"]["memory_usage"] == 0.5
    assert seen["idle"]["quality"] == pytest.approx(0.1 / 0.105)


def test_profiles_refuse_bad_values_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ShoalError, match="memory: 'lots' is not a quantity") as e:
        NodeProfile(memory="lots")
    assert e.value.code == "sim.node_profile"
    with pytest.raises(ShoalError, match="unknown key"):
        shoal.simulate(FleetSwarm(), nodes=[{"count": 2, "gpu": 1}])
    with pytest.raises(ShoalError, match="is not KEY=VALUE"):
        NodeProfile.parse("count=2,gpus")
    assert NodeProfile.parse("count=3,gpus=1,memory=64Gi,images=python+torch") == NodeProfile(
        count=3, gpus=1, memory="64Gi", images=["python", "torch"]
    )


def test_profiled_images_and_datasets_restrict_placement(tmp_path: Path) -> None:
    (tmp_path / "scans.txt").write_text("x")

    class Scans(Swarm):
        max_iterations = 1

        def execute(self) -> Task:
            module = Module(CODE, image="torch", datasets=["scans"], name="scans")
            return Task(module, method="all", alias="scans")()

    fleet = [
        NodeProfile(name="hospital", datasets={"scans": tmp_path / "scans.txt"}, images=["torch"]),
        NodeProfile(name="clinic", datasets={"scans": tmp_path / "scans.txt"}, images=["python"]),
        NodeProfile(name="lab", images=["torch"]),
    ]
    run = shoal.simulate(Scans(), nodes=fleet, executor="inline")
    assert run.ok, run.reason
    assert sorted(run.results.select("memory", alias="scans")) == ["hospital"]


NODES_TOML = """
[[nodes]]
count = 3
name = "cpu"
memory = "8Gi"

[[nodes]]
count = 2
name = "gpu"
gpus = 2
gpu_memory = "40Gi"
memory = "64Gi"
datasets = { mnist = "mnist.txt" }
"""

SWARM = """
from shoal import Module, Swarm, Task

CODE = '''
from shoal.runtime import Task

class T(Task):
    def run(self):
        self.world.results.add("gpus", self.local.get_resources().gpu)

def main():
    T().run()
'''


class Train(Swarm):
    max_iterations = 1

    def execute(self):
        module = Module(CODE, "pytorch", datasets=["mnist"], resources={"gpu": 2})
        return Task(module, method="all", gpu=True, alias="train")()
"""


def test_shoal_simulate_takes_a_nodes_file_and_inline_profiles(tmp_path: Path) -> None:
    (tmp_path / "nodes.toml").write_text(NODES_TOML)
    (tmp_path / "mnist.txt").write_text("digits")
    (tmp_path / "swarm.py").write_text(SWARM)

    def simulate(*profile: str) -> subprocess.CompletedProcess[str]:
        args = [a for p in profile for a in ("--node-profile", p)]
        return subprocess.run(
            [sys.executable, "-m", "shoal", "simulate", "swarm.py", *args, "--json", "out.json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    done = simulate("nodes.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["status"] == "succeeded"
    # A fleet whose only node has one GPU and no mnist: it fails, naming both.
    failed = simulate("count=1,name=one-gpu,gpus=1")
    assert failed.returncode == 1
    assert "succeeded" not in failed.stdout
    assert "node one-gpu: lacks dataset 'mnist', has 1 GPU, needs 2" in " ".join(
        failed.stdout.split()
    )


def test_the_simulator_refuses_requirements_its_python_lacks(tmp_path: Path) -> None:
    # Seed 001's directory module with a requirements.txt.
    folder = tmp_path / "worker"
    folder.mkdir()
    (folder / "__init__.py").write_text(CODE)
    (folder / "requirements.txt").write_text("numpy\nshoal-no-such-dist>=1  # pinned\n")

    class Needs(Swarm):
        max_iterations = 1

        def execute(self) -> Task:
            return Task(Module(folder, "pytorch", requirements=["numpy>=1.0"]))()

    with pytest.raises(ShoalError, match=r"module 'worker' needs shoal-no-such-dist>=1 \(not") as e:
        shoal.simulate(Needs(), nodes=2, executor="inline")
    assert e.value.code == "sim.requirements"
    (folder / "requirements.txt").write_text("numpy\n")
    assert shoal.simulate(Needs(), nodes=2, executor="inline").ok
