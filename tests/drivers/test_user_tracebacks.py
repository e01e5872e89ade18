"""Tracebacks point at the user's files, not at the copies a driver extracted
(``.shoal/runs/<ts>/modules/<hex>/``, a node's bundle cache): the simulator shows the
module's source path on this machine; a coordinator, whose users' files are elsewhere,
shows ``name@version/<path in the module>`` (issue 16, point 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

import shoal
from shoal import Module, Swarm, Task
from shoal.testing import Federation

from .coord_federation import CoordFederation

pytestmark = pytest.mark.timeout(60)

WORKER = """\
from shoal.runtime import Task

from {helper} import check


class Worker(Task):
    def run(self):
        if self.world.node_id == "node-00001":
            check(self.world.node_id)


def main():
    Worker().run()
"""

HELPER = """\
def check(node_id):
    raise ValueError("bad shard on " + node_id)
"""


class One(Swarm):
    max_iterations = 1

    def __init__(self, module: Module) -> None:
        self.worker = Task(module, alias="worker")

    def execute(self) -> Task:
        return self.worker()


def _package(tmp: Path) -> Path:
    """``tmp/project/fl_worker/``: a package module whose main() calls a helper module."""
    pkg = tmp / "project" / "fl_worker"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(WORKER.format(helper="fl_worker.helper"))
    (pkg / "helper.py").write_text(HELPER)
    return pkg


def _assert_no_copy(text: str) -> None:
    assert "modules/" not in text and ".shoal" not in text and "sha256:" not in text, text


def test_the_simulator_shows_the_module_files_where_the_user_wrote_them(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    run = shoal.simulate(
        One(Module(pkg)), nodes=2, workers=1, run_dir=tmp_path / "run", raise_on_failure=False
    )
    (failure,) = run.failures
    tb = failure.traceback
    assert f'File "{pkg / "__init__.py"}", line 9, in run' in tb, tb
    assert f'File "{pkg / "helper.py"}", line 2, in check' in tb, tb
    _assert_no_copy(tb)


def test_a_single_file_module_and_an_import_error_show_the_user_file(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text("import nowhere_to_be_found\n\ndef main():\n    pass\n")
    run = Federation(nodes=1).run(One(Module(tmp_path / "worker.py")))
    (failure,) = run.failures
    assert "importing the module failed: ModuleNotFoundError" in failure.error
    assert f'File "{tmp_path / "worker.py"}", line 1, in <module>' in failure.traceback
    assert "importlib" not in failure.traceback and "shoal/_runtime" not in failure.traceback
    _assert_no_copy(failure.traceback)


def test_a_source_text_module_is_named_by_its_name() -> None:
    source = WORKER.format(helper="math").replace("check(self.world.node_id)", "1 / 0")
    source = source.replace("from math import check\n", "")
    run = Federation(nodes=2).run(One(Module(source, name="inline_worker", version="2.1")))
    (failure,) = run.failures
    assert 'File "inline_worker@2.1/shoal_module_source.py", line 8, in run' in failure.traceback
    _assert_no_copy(failure.traceback)


def test_a_coordinator_shows_name_at_version_and_the_path_in_the_module(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    fed = CoordFederation(nodes=2, root=tmp_path / "coord")
    run = fed.run(One(Module(pkg, version="1.0")))
    (failure,) = run.failures
    tb = failure.traceback
    assert 'File "fl_worker@1.0/fl_worker/__init__.py", line 9, in run' in tb, tb
    assert 'File "fl_worker@1.0/fl_worker/helper.py", line 2, in check' in tb, tb
    assert str(tmp_path) not in tb
    _assert_no_copy(tb)
