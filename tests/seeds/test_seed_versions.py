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


def _experimental(seed: ModuleType) -> Swarm:
    class Experimental(seed.ExperimentalSwarm):
        max_iterations = 1

        def execute(self):
            return [self.worker_stable(), self.worker_experimental()]

    return Experimental()


def test_two_versions_of_identical_code_are_two_plan_entries(seed: ModuleType) -> None:
    plan = _experimental(seed).prepare_graph()
    refs = {t.alias: plan.module_of(t.alias) for t in plan.tasks}
    assert {a: (r.name, r.version) for a, r in refs.items()} == {
        "worker_stable": ("worker", "1.0.0"),
        "worker_experimental": ("worker", "1.1.0"),
    }
    assert len(plan.modules) == 2
    assert len({r.digest for r in refs.values()}) == 1  # one bundle, two declarations
    assert refs["worker_experimental"].label == "worker 1.1.0"


def test_two_codes_under_one_name_and_version_are_refused(seed: ModuleType) -> None:
    module_v1_0 = seed.module_v1_0
    # The seed's module_v1_1, with its version left at 1.0.0 by mistake.
    module_v1_1 = shoal.Module(
        python_program=str(TESTS / "seeds" / "versioning" / "worker_v1.1.py"),
        image="manta_light:pytorch",
        name="fl_worker",
        version="1.0.0",
    )

    class Clash(Swarm):
        def execute(self):
            return [Task(module_v1_0, alias="a")(), Task(module_v1_1, alias="b")()]

    with pytest.raises(shoal.SwarmValidationError) as e:
        Clash().prepare_graph()
    text = str(e.value)
    assert "module 'fl_worker' version '1.0.0'" in text
    assert "worker_v1.0.py" in text and "worker_v1.1.py" in text
    assert "give the new code its own version=" in text


def test_the_version_shows_in_logs_timings_and_the_summary(seed: ModuleType) -> None:
    run = shoal.simulate(_both_versions(seed), nodes=2, seed=0)
    assert run.status == "succeeded", run.reason
    logs = {(r.alias, r.module, r.version, r.message) for r in run.logs()}
    assert ("stable", "fl_worker", "1.0.0", "running version 1.0.0") in logs
    assert ("canary", "fl_worker", "1.1.0", "running version 1.1.0") in logs
    assert {(t.alias, t.module, t.version) for t in run.timings} == {
        ("stable", "fl_worker", "1.0.0"),
        ("canary", "fl_worker", "1.1.0"),
    }
    summary = run.summary()["timings"]
    assert {(t["alias"], t["version"]) for t in summary} == {
        ("stable", "1.0.0"),
        ("canary", "1.1.0"),
    }
