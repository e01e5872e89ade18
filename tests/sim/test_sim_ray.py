"""The simulator on a real Ray cluster (``backend="ray"``, issue #22): a head and a second
node process on this machine (``helpers.ray_cluster``), the FedAvg benchmark workload of
``bench/workload`` at 100 and 1,000 virtual nodes, the same answer as the local pool
(about 5 s each on a quiet 2-core machine; the 1,000 one is marked slow); and a Ray
worker killed mid-round is replaced and the run finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT
from helpers.ray_cluster import RayCluster

import shoal
from shoal import Module, Swarm, Task

pytestmark = pytest.mark.timeout(600)

WORKLOAD = ROOT / "bench" / "workload"


class FedAvg(Swarm):
    """The benchmark's workload (bench/sim_overhead.py), small."""

    def __init__(self, rounds: int, params: int = 1000, retries: int = 0) -> None:
        super().__init__()
        self.name = "fedavg_bench"
        self.max_iterations = rounds
        self.set_global("w", np.zeros(params, dtype=np.float32))
        self.set_global("measure_memory", False)
        self.worker = Task(
            Module(WORKLOAD / "worker.py"), method="all", alias="worker", retries=retries
        )
        self.aggregator = Task(
            Module(WORKLOAD / "aggregator.py"), method="any", maximum=1, alias="aggregator"
        )

    def execute(self) -> Task:
        return self.aggregator(self.worker())


def expected(nodes: int, rounds: int) -> float:
    m = (nodes - 1) / 2
    return m + (0 - m) * 0.99**rounds


def _same_as_local(nodes: int, rounds: int, cluster: RayCluster, tmp_path: Path) -> None:
    local = shoal.simulate(FedAvg(rounds), nodes=nodes, workers=2, run_dir=tmp_path / "local")
    ray = shoal.simulate(
        FedAvg(rounds),
        nodes=nodes,
        backend="ray",
        ray_address=cluster.address,
        run_dir=tmp_path / "ray",
    )
    assert ray.ok and local.ok, (ray.reason, local.reason)
    assert ray.iterations == local.iterations == rounds
    w_ray, w_local = np.asarray(ray.globals["w"]), np.asarray(local.globals["w"])
    np.testing.assert_array_equal(w_ray, w_local)
    np.testing.assert_allclose(w_ray, expected(nodes, rounds), rtol=1e-5)
    # Every virtual node's result came through the cluster, in every round.
    assert len(ray.results.select("w", alias="worker")) == nodes
    counts = {t.alias: t.instances for t in ray.timings}
    assert counts == {"worker": nodes * rounds, "aggregator": rounds}


def test_fedavg_at_100_nodes_on_a_two_node_cluster_matches_the_local_pool(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    _same_as_local(100, 3, ray_cluster, tmp_path)


@pytest.mark.slow
def test_fedavg_at_1000_nodes_on_a_two_node_cluster_matches_the_local_pool(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    _same_as_local(1000, 3, ray_cluster, tmp_path)


def _actor_pids() -> set[int]:
    """The pids of this machine's shoal Ray workers (Ray names the process after the
    actor's running method)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if argv.startswith(b"ray::RayWorker.serve"):
            found.add(int(entry.name))
    return found


def test_a_ray_worker_killed_mid_round_is_replaced_and_the_run_finishes(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    nodes, rounds = 200, 6
    killed: list[int] = []
    started = threading.Event()

    def progress(what: str, iteration: int, done: int, scheduled: int) -> None:
        # Mid-round 2: half of its instances are done, the rest queued or running.
        if iteration == 2 and done >= nodes * 2 + nodes // 2 and not started.is_set():
            started.set()
            pids = sorted(_actor_pids())
            assert pids, "no shoal Ray worker process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    t0 = time.monotonic()
    run = shoal.simulate(
        FedAvg(rounds, retries=2),
        nodes=nodes,
        backend="ray",
        ray_address=ray_cluster.address,
        run_dir=tmp_path / "ray",
        progress=progress,
    )
    assert killed, "the run ended before the kill"
    assert run.ok, run.reason
    assert run.iterations == rounds
    np.testing.assert_allclose(np.asarray(run.globals["w"]), expected(nodes, rounds), rtol=1e-5)
    # The killed worker's instance failed as a crash and was retried on a new worker.
    # Jobs are sent to a worker ahead, so the killed one was running an instance.
    crashes = [f for f in run.failures if f.kind == "crash"]
    assert len(crashes) == 1, run.failures
    assert crashes[0].error.startswith("the worker process died (Ray actor pid"), crashes[0]
    assert crashes[0].alias == "worker"
    counts = {t.alias: t.instances for t in run.timings}
    assert counts["worker"] == nodes * rounds + 1  # the retry ran, on a new worker
    assert killed[0] not in _actor_pids()
    assert time.monotonic() - t0 < 500


SWARM_FILE = f"""
import numpy as np
from shoal import Module, Swarm, Task

class FedAvg(Swarm):
    max_iterations = 2

    def __init__(self):
        self.set_global("w", np.zeros(10, dtype=np.float32))
        self.set_global("measure_memory", False)
        self.worker = Task(Module({str(WORKLOAD / "worker.py")!r}), method="all", alias="worker")
        self.aggregator = Task(
            Module({str(WORKLOAD / "aggregator.py")!r}), method="any", maximum=1,
            alias="aggregator",
        )

    def execute(self):
        return self.aggregator(self.worker())
"""


def test_shoal_simulate_backend_ray_address_runs_on_the_cluster(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    (tmp_path / "swarm.py").write_text(SWARM_FILE)
    out = subprocess.run(
        [
            *(sys.executable, "-m", "shoal", "simulate", "swarm.py:FedAvg", "--nodes", "20"),
            *("--backend", "ray", "--address", ray_cluster.address),
            *("--json", "out.json", "--run-dir", "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["status"] == "succeeded"
    clients = [m["value"] for m in summary["metrics"] if m["name"] == "clients"]
    assert clients == [20, 20]  # every virtual node's result, in both rounds
    assert {t["alias"]: t["instances"] for t in summary["timings"]} == {
        "worker": 40,
        "aggregator": 2,
    }


def test_address_without_backend_ray_is_refused(tmp_path: Path) -> None:
    (tmp_path / "swarm.py").write_text(SWARM_FILE)
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "simulate", "swarm.py:FedAvg", "--address", "auto"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "--address is the Ray cluster's: it needs --backend ray" in out.stderr


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"backend": "spark"}, "unknown backend 'spark'"),
        ({"backend": "ray", "executor": "inline"}, "executor 'inline' is not available"),
    ],
)
def test_a_bad_backend_is_refused_before_anything_runs(kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(shoal.ShoalError) as e:
        shoal.simulate(FedAvg(1), nodes=2, **kwargs)  # type: ignore[arg-type]
    assert e.value.code == "sim.backend"
    assert says in str(e.value)


def test_the_overhead_bench_runs_the_ray_pool_beside_the_local_pool(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    out = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "sim_overhead.py")),
            *("--backends", "ray,local", "--ray-address", ray_cluster.address),
            *("--clients", "10", "--rounds", "2", "--params", "1000"),
            *("--json", str(tmp_path / "r.json")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| 10 | check | shoal-ray: correct; shoal: correct |" in out.stdout
    assert "| N | figure | shoal-ray | shoal | shoal-ray/shoal |" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())["10"]
    assert report["shoal-ray"]["correct"] and report["shoal"]["correct"]
    assert len(report["shoal-ray"]["round_times"]) == 2
