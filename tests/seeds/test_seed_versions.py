"""Seed 001's versioning section: module files with dots in their names run, and
(name, version) is kept per module (issue 15, points 1 and 2)."""

from __future__ import annotations

from types import ModuleType

import pytest
from helpers import TESTS, load_file

import shoal
from shoal import Swarm, Task


@pytest.fixture(scope="module")
def seed() -> ModuleType:
    return load_file(TESTS / "seeds" / "versioning" / "seed_001_versioning.py")


def _both_versions(seed: ModuleType) -> Swarm:
    class BothVersions(Swarm):
        def __init__(self):
            super().__init__()
            self.max_iterations = 1
            self.stable = Task(seed.module_v1_0, method="all", alias="stable")
            self.canary = Task(seed.module_v1_1, method="all", alias="canary")

        def execute(self):
            return [self.stable(), self.canary()]

    return BothVersions()


def test_module_files_with_dots_in_their_names_run(seed: ModuleType) -> None:
    """`python_program="worker_v1.0.py"` failed with "No module named 'worker_v1'"."""
    run = shoal.simulate(_both_versions(seed), nodes=3, seed=0)
    assert run.status == "succeeded", (run.reason, [f.traceback for f in run.failures])
    assert set(run.results.select("version", alias="stable").values()) == {"1.0.0"}
    assert set(run.results.select("version", alias="canary").values()) == {"1.1.0"}


def test_module_files_with_dots_run_inline(seed: ModuleType) -> None:
    run = shoal.simulate(_both_versions(seed), nodes=2, seed=0, executor="inline")
    assert run.status == "succeeded", run.reason
    assert set(run.results.select("version", alias="stable").values()) == {"1.0.0"}


def test_package_folders_with_dots_in_their_names_run(tmp_path) -> None:
    """A package folder `worker.v2/` with a relative import runs as well."""
    pkg = tmp_path / "worker.v2"
    pkg.mkdir()
    (pkg / "model.py").write_text("VERSION = '2'\n")
    (pkg / "__init__.py").write_text(
        "from shoal.runtime import Task\n"
        "from .model import VERSION\n\n\n"
        "class Worker(Task):\n"
        "    def run(self):\n"
        "        self.world.results.add('version', VERSION)\n\n\n"
        "def main():\n"
        "    Worker().run()\n"
    )

    class Dotted(Swarm):
        max_iterations = 1

        def execute(self):
            return Task(shoal.Module(str(pkg)), alias="worker")()

    run = shoal.simulate(Dotted(), nodes=2, seed=0)
    assert run.status == "succeeded", (run.reason, [f.traceback for f in run.failures])
    assert set(run.results.select("version", alias="worker").values()) == {"2"}
