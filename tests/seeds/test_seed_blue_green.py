"""Seed 001's blue-green deployment, end to end in the simulator: each eligible node
runs exactly one of the two versions, 80/20 (issue 15, point 3)."""

from __future__ import annotations

from helpers import TESTS, load_file

import shoal


def test_seed001_blue_green_splits_the_nodes_80_20() -> None:
    seed = load_file(TESTS / "seeds" / "versioning" / "seed_001_versioning.py")

    class ExperimentalSwarm(seed.ExperimentalSwarm):
        max_iterations = 2

        def execute(self):
            return [self.worker_stable(), self.worker_experimental()]

    run = shoal.simulate(ExperimentalSwarm(), nodes=10, seed=3)
    assert run.status == "succeeded", (run.reason, [f.traceback for f in run.failures])
    for iteration in (0, 1):
        stable = run.results.select("node", alias="worker_stable", iteration=iteration)
        canary = run.results.select("node", alias="worker_experimental", iteration=iteration)
        assert (len(stable), len(canary)) == (8, 2)
        assert set(stable).isdisjoint(canary)
        assert set(stable) | set(canary) == {f"node-{i:05d}" for i in range(10)}
    versions = {(t.alias, t.module, t.version) for t in run.timings}
    assert versions == {
        ("worker_stable", "worker", "1.0.0"),
        ("worker_experimental", "worker", "1.1.0"),
    }
