"""Resources, requirements, GPUs, load and link on real node agent processes (#15
points 4, 5, 6, 9c): a coordinator and two agents on loopback, one of which finds two
GPUs through a fake ``nvidia-smi`` on its PATH.

The swarms are written as seeds 001 and 002 write them; only the imports changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy_harness import (
    Coordinator,
    Deployment,
    deployment,
    results,
    submit,
    wait_nodes,
    wait_status,
)

from shoal import Module, Swarm, Task

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

SEED001 = Path(__file__).parent.parent / "seeds" / "modules" / "seed001"
PROCESS = 'executor = "process"'
MIB = 2**20

FAKE_NVIDIA_SMI = """#!/bin/sh
# What nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits prints.
echo "NVIDIA H100 80GB HBM3, 24576"
echo "NVIDIA H100 80GB HBM3, 24576"
"""

CODE = """
import resource
from shoal.runtime import Task

class Probe(Task):
    def run(self):
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        self.world.results.add("limit", soft)

def main():
    Probe().run()
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Coordinator]]:
    root = tmp_path_factory.mktemp("fleet")
    fake = root / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (fake / "nvidia-smi").chmod(0o755)
    with deployment(root) as d:
        coord = d.coordinator(db=f"sqlite:///{root / 'shoal.db'}", heartbeat_timeout=5.0)
        d.node(coord, "cpu-node", extra=PROCESS, limits="memory_mb = 2048")
        path = os.environ["PATH"]
        os.environ["PATH"] = f"{fake}:{path}"  # only the GPU node's agent sees it
        try:
            d.node(coord, "gpu-node", extra=PROCESS, limits="memory_mb = 8192")
        finally:
            os.environ["PATH"] = path
        with coord.user() as user:
            wait_nodes(user, ["cpu-node", "gpu-node"])
        yield d, coord


@pytest.fixture
def user(site: tuple[Deployment, Coordinator]) -> Iterator[httpx.Client]:
    with site[1].user() as client:
        yield client


def _nodes(user: httpx.Client) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in user.get("/v1/nodes").json()}


def _one(module: Module, placement_timeout: float = 60.0, **task: Any) -> Swarm:
    class One(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            super().__init__()
            self.placement_timeout = placement_timeout
            self.t = Task(module=module, alias="t", **task)

        def execute(self) -> Task:
            return self.t()

    return One()


def test_nodes_advertise_what_they_detected_and_shoal_nodes_shows_it(
    site: tuple[Deployment, Coordinator], user: httpx.Client
) -> None:
    nodes = _nodes(user)
    gpu, cpu = nodes["gpu-node"], nodes["cpu-node"]
    assert (gpu["gpu"], gpu["gpus"], gpu["gpu_memory"]) == (True, 2, 24576 * MIB)
    assert (cpu["gpu"], cpu["gpus"], cpu["gpu_memory"]) == (False, 0, None)
    assert cpu["memory"] == 2048 * MIB  # its per-instance limit, below the machine's
    assert gpu["memory"] == min(8192 * MIB, gpu["memory"]) and cpu["cpu"] >= 1
    coord = site[1]
    shown = subprocess.run(
        [sys.executable, "-m", "shoal", "nodes", "--coordinator", coord.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SHOAL_TOKEN": coord.user_token, "COLUMNS": "200"},
    )
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if "gpu-node" in x)
    assert "2 (24.0Gi)" in line and "8.0Gi" in line
    line = next(x for x in shown.stdout.splitlines() if "cpu-node" in x)
    assert "2.0Gi" in line and " no " in line


def test_a_gpu_task_runs_only_on_the_gpu_node(user: httpx.Client) -> None:
    # Seed 002, "Resource Allocation" (maximum=0.5 of the eligible nodes: the one).
    module = Module(SEED001 / "optimized_task.py", "python")
    swarm = _one(module, method="any", maximum=0.5, gpu=True)
    swarm_id = submit(user, swarm)
    status = wait_status(user, swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (row,) = results(user, swarm_id, "plan", alias="t")
    assert row["node_id"] == "gpu-node"
    assert row["value"] == {"batch_size": 96, "device": "cuda"}  # 24Gi of GPU memory


def test_resources_place_the_task_where_they_fit_and_become_its_limits(
    user: httpx.Client,
) -> None:
    # Seed 002, "Module Packaging": 4Gi fits only the node whose limit is 8Gi.
    module = Module(
        name="my_module",
        python_program=CODE,  # Python code or file
        image="python",  # Container image
        requirements=["numpy"],  # Dependencies
        resources={"cpu": 1, "memory": "4Gi"},  # Resource requirements
    )
    swarm_id = submit(user, _one(module, method="all"))
    status = wait_status(user, swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (row,) = results(user, swarm_id, "limit", alias="t")
    # The process executor bounds memory by an address-space rlimit: the request's.
    assert (row["node_id"], row["value"]) == ("gpu-node", 4096 * MIB)


def test_a_shortfall_is_shown_while_the_task_waits_and_named_when_it_fails(
    user: httpx.Client,
) -> None:
    module = Module(CODE, resources={"cpu": 512, "memory": "9000Gi", "gpu": 8})
    swarm_id = submit(user, _one(module, placement_timeout=3.0))
    waiting = wait_status(user, swarm_id, until=lambda s: s["waiting"] or s["status"] != "running")
    assert waiting["status"] == "running", json.dumps(waiting, indent=1)
    why = waiting["waiting"]["t"]
    assert "node cpu-node:" in why and "needs 9000Gi" in why and "no GPU" in why
    assert "node gpu-node:" in why and "has 2 GPUs, needs 8" in why
    status = wait_status(user, swarm_id)
    assert status["status"] == "failed" and "has 2 GPUs, needs 8" in status["reason"]
    assert "within the placement timeout of 3s" in status["reason"]


def test_an_image_every_connected_node_lacks_fails_at_once(user: httpx.Client) -> None:
    module = Module(CODE, image="manta_light:pytorch")  # no node offers it
    start = time.monotonic()
    swarm_id = submit(user, _one(module, placement_timeout=60.0))
    status = wait_status(user, swarm_id, timeout=30)
    assert time.monotonic() - start < 30  # not the 60 s placement timeout
    assert status["status"] == "failed"
    reason = status["reason"]
    assert "(every connected node lacks its image)" in reason
    assert "nodes cpu-node, gpu-node: lacks image 'manta_light:pytorch'" in reason


def test_a_node_refuses_a_task_whose_image_lacks_its_requirements(
    user: httpx.Client, tmp_path: Path
) -> None:
    module = Module(CODE, requirements=["numpy>=1.0", "shoal-no-such-dist>=1", "numpy<1.0"])
    swarm_id = submit(user, _one(module, specified_ids=["cpu-node"]))
    status = wait_status(user, swarm_id)
    assert status["status"] == "failed"
    (failure,) = status["failures"]
    error = failure["error"]
    assert "node cpu-node refuses the task: its image 'python' lacks requirements" in error
    assert "shoal-no-such-dist>=1 (not installed)" in error
    assert "numpy<1.0 (installed: " in error and "numpy>=1.0" not in error
    # Seed 001's directory module with a requirements.txt.
    folder = tmp_path / "worker"
    folder.mkdir()
    (folder / "__init__.py").write_text(CODE)
    (folder / "requirements.txt").write_text("# pinned\nnumpy\nshoal-no-such-dist==2.0\n")
    swarm_id = submit(user, _one(Module(folder, "python"), specified_ids=["cpu-node"]))
    status = wait_status(user, swarm_id)
    assert status["status"] == "failed"
    assert "shoal-no-such-dist==2.0 (not installed)" in status["failures"][0]["error"]


def test_seed001_adaptive_worker_reads_its_nodes_load_and_link(user: httpx.Client) -> None:
    module = Module(SEED001 / "adaptive_worker.py")
    swarm_id = submit(user, _one(module, method="all"))
    status = wait_status(user, swarm_id)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    seen = {r["node_id"]: r["value"] for r in results(user, swarm_id, "seen", alias="t")}
    strategy = {r["node_id"]: r["value"] for r in results(user, swarm_id, "strategy", alias="t")}
    assert set(seen) == {"cpu-node", "gpu-node"}
    for node, s in seen.items():
        assert 0.0 <= s["cpu_usage"] <= 1.0 and 0.0 < s["memory_usage"] < 1.0
        # Loopback: answered heartbeats, well under 100 ms each.
        assert s["loss"] == 0.0 and 0.0 < s["rtt_s"] < 0.1 and s["quality"] > 0.5, s
        expected = "lightweight" if s["cpu_usage"] > 0.8 else "standard"
        assert strategy[node] == expected


def _wheel(folder: Path, name: str, version: str, code: str) -> Path:
    """A pure-Python wheel written by hand (no build tools, no network)."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", record)
    return wheel


USES_DEP = """
from shoal.runtime import Task

class Uses(Task):
    def run(self):
        import shoal_test_dep
        self.world.results.add("answer", shoal_test_dep.ANSWER)

def main():
    Uses().run()
"""


def test_a_node_that_may_install_builds_a_cached_environment_from_its_own_index(
    tmp_path: Path,
) -> None:
    wheels = tmp_path / "wheels"
    _wheel(wheels, "shoal_test_dep", "1.0", "ANSWER = 42\n")
    with deployment(tmp_path) as d:
        coord = d.coordinator()
        extra = f'{PROCESS}\ninstall_requirements = true\npackage_index = "{wheels}"'
        _, folder = d.node(coord, "builder", extra=extra)
        with coord.user() as user:
            wait_nodes(user, ["builder"])
            module = Module(USES_DEP, requirements=["shoal-test-dep==1.0", "numpy"])
            for _ in range(2):  # the second run reuses the environment
                swarm_id = submit(user, _one(module))
                status = wait_status(user, swarm_id)
                assert status["status"] == "succeeded", json.dumps(status, indent=1)
                (row,) = results(user, swarm_id, "answer", alias="t")
                assert row["value"] == 42
            envs = [p for p in (folder / "state" / "envs").iterdir()]
            assert len(envs) == 1 and (envs[0] / ".complete").read_text() == (
                "shoal-test-dep==1.0\n"  # only what the image lacked; numpy is the image's
            )
            # What the index does not hold is refused, naming pip's answer.
            module = Module(USES_DEP, requirements=["shoal-test-dep==2.0"])
            status = wait_status(user, submit(user, _one(module)))
            assert status["status"] == "failed"
            error = status["failures"][0]["error"]
            assert "node builder: installing shoal-test-dep==2.0 from" in error
            assert "No matching distribution" in error
