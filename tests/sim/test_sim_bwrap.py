"""The simulator's worker pool under bubblewrap (``executor="bwrap"``).

- An example swarm gives the same answer in the sandbox as in the plain pool.
- Task code that reaches outside its data (a host file elsewhere, a TCP server on the
  host's 127.0.0.1, a write to its own dataset) fails under bwrap with an error that
  says the sandbox is why, and succeeds in the plain pool (so these tests can fail).
- The CLI takes ``--executor bwrap`` (with its default, relative run folder).
- Without bubblewrap the error names the fix; no machine is needed for that test.

Tests that need bubblewrap are skipped with the reason printed (``-ra``) where it is
missing or does not work; CI installs it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from shoal import Module, Swarm, Task
from shoal._define.loader import load_swarm
from shoal._errors import ShoalError
from shoal._exec import bwrap as bwrap_module
from shoal._exec.jobs import normalize_executor
from shoal._exec.pool_bwrap import SANDBOX_NOTE, bwrap_problem

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORDCOUNT = EXAMPLES / "mapreduce_wordcount"


@pytest.fixture(scope="module")
def bwrap() -> None:
    problem = bwrap_problem()
    if problem is not None:
        pytest.skip(f"executor 'bwrap' cannot run here ({problem}): apt-get install bubblewrap")


def test_the_example_gives_the_same_counts_in_the_sandbox(bwrap: None) -> None:
    swarm, _ = load_swarm(str(WORDCOUNT / "swarm.py"))
    runs = {
        ex: shoal.simulate(
            swarm,
            nodes=3,
            datasets={"texts": WORDCOUNT / "data"},
            partition="iid",
            executor=ex,
            workers=2,
        )
        for ex in ("process", "bwrap")
    }
    for ex, run in runs.items():
        assert run.ok, (ex, run.reason, [f.traceback for f in run.failures])
    counts = runs["bwrap"].globals["counts"]
    assert counts == runs["process"].globals["counts"]
    assert sum(counts.values()) > 100


REACH = """
import socket
from shoal.runtime import Task


class Reach(Task):
    def run(self):
        what = {what!r}
        if what == "host_file":
            got = open({secret!r}).read()
        elif what == "tcp":
            with socket.create_connection(("127.0.0.1", {port}), timeout=5):
                got = "connected"
        else:  # write to its own dataset
            with open(self.local.get_dataset_path("d"), "a") as f:
                f.write("changed")
            got = "written"
        self.world.results.add("got", got)


def main():
    Reach().run()
"""


def reach(what: str, secret: Path, port: int) -> Swarm:
    code = REACH.format(what=what, secret=str(secret), port=port)

    class One(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            self.t = Task(Module(code, name="reach", datasets=["d"]), alias="reach")

        def execute(self) -> Task:
            return self.t()

    return One()


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, Path]]:
    """A host file in a folder no node maps, a TCP server on 127.0.0.1 (accepting), and
    the dataset the nodes do map."""
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    secret.write_text("the host's secret")
    data = tmp_path_factory.mktemp("data") / "d.txt"
    data.write_text("node data")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield secret, server.getsockname()[1], data
    finally:
        stop.set()
        thread.join(5)
        server.close()


EXPECTED = {"host_file": "the host's secret", "tcp": "connected", "write_data": "written"}
ERRORS = {
    "host_file": "FileNotFoundError",
    "tcp": "ConnectionRefusedError",
    "write_data": "OSError",  # [Errno 30] Read-only file system
}


@pytest.mark.parametrize("what", sorted(EXPECTED))
def test_reaching_outside_works_in_the_plain_pool_and_fails_in_the_sandbox(
    bwrap: None, outside: tuple[Path, int, Path], what: str
) -> None:
    secret, port, data = outside
    swarm = reach(what, secret, port)
    plain = shoal.simulate(swarm, nodes=1, datasets={"d": data}, executor="process", workers=1)
    assert plain.ok, [f.traceback for f in plain.failures]
    assert plain.results.select("got", alias="reach") == {"node-00000": EXPECTED[what]}

    data.write_text("node data")
    boxed = shoal.simulate(
        swarm, nodes=1, datasets={"d": data}, executor="bwrap", workers=1, raise_on_failure=False
    )
    assert not boxed.ok
    (failure,) = boxed.failures
    assert failure.error.startswith(ERRORS[what]), failure.error
    assert SANDBOX_NOTE in failure.error  # it says why
    assert "the host's secret" not in failure.error + failure.traceback
    assert data.read_text() == "node data"


def test_the_cli_runs_the_pool_in_the_sandbox(bwrap: None, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal",
            "simulate",
            str(WORDCOUNT / "swarm.py"),
            "--nodes",
            "2",
            "--dataset",
            f"texts={WORDCOUNT / 'data'}",
            "--partition",
            "iid",
            "--workers",
            "1",
            "--executor",
            "bwrap",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,  # the default run folder .shoal/runs/... is relative to it
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "succeeded" in out.stdout


def test_without_bubblewrap_the_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bwrap_module, "bwrap_binary", lambda: None)
    with pytest.raises(ShoalError, match="apt-get install bubblewrap") as e:
        shoal.simulate(reach("tcp", Path("/nonexistent"), 1), nodes=1, executor="bwrap")
    assert e.value.code == "sim.bwrap" and "not installed" in str(e.value)


def test_executor_names() -> None:
    assert normalize_executor("processes") == "process"  # the old name still works
    assert [normalize_executor(n) for n in ("process", "bwrap", "inline")] == [
        "process",
        "bwrap",
        "inline",
    ]
    with pytest.raises(ShoalError, match=r"'process'.*'bwrap'.*'inline'") as e:
        shoal.simulate(reach("tcp", Path("/x"), 1), nodes=1, executor="sandbox")
    assert e.value.code == "sim.executor"


HANG = """
import time
from shoal.runtime import Task


class Hang(Task):
    def run(self):
        time.sleep(300)


def main():
    Hang().run()
"""


def test_a_timed_out_instance_kills_its_sandboxed_worker_and_nothing_is_left(
    bwrap: None, tmp_path: Path
) -> None:
    class Hung(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            self.t = Task(Module(HANG, name="hang"), alias="hang", timeout=1.0)

        def execute(self) -> Task:
            return self.t()

    run_dir = tmp_path / "run"
    run = shoal.simulate(
        Hung(), nodes=2, executor="bwrap", workers=2, run_dir=run_dir, raise_on_failure=False
    )
    assert not run.ok and {f.kind for f in run.failures} == {"timeout"}
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(run_dir).encode() in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:
            continue  # it exited meanwhile
    assert left == [], f"processes of the run still alive: {left}"


READ_DATASETS = """
import numpy as np
from shoal.runtime import Task


class Read(Task):
    def run(self):
        self.world.results.add("own", float(np.load(self.local.get_dataset_path({own!r})).sum()))
        # The node maps the other dataset too; this module did not declare it.
        other = self.local.get_dataset_path({other!r})
        try:
            got = float(np.load(other).sum())
        except OSError as e:
            got = type(e).__name__
        self.world.results.add("other", got)


def main():
    Read().run()
"""


def two_readers() -> Swarm:
    """Task ``ra`` declares dataset ``a`` and task ``rb`` dataset ``b``; each reads its
    own and tries the other's."""

    class Two(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            code_a = READ_DATASETS.format(own="a", other="b")
            code_b = READ_DATASETS.format(own="b", other="a")
            self.ra = Task(Module(code_a, name="read_a", datasets=["a"]), alias="ra")
            self.rb = Task(Module(code_b, name="read_b", datasets=["b"]), alias="rb")

        def execute(self) -> list[Task]:
            return [self.ra(), self.rb()]

    return Two()


@pytest.mark.parametrize("partition", [None, "iid"], ids=["whole", "partitioned"])
def test_a_sandboxed_task_reads_only_the_datasets_its_module_declares(
    bwrap: None, tmp_path: Path, partition: str | None
) -> None:
    """Under ``bwrap`` each module's workers bind only the datasets it declares, whether
    the dataset is a file elsewhere (shared whole) or the simulator's own shares in the
    run folder; the plain pool reads both (so the test can fail)."""
    import numpy as np

    (tmp_path / "ha").mkdir()
    (tmp_path / "hb").mkdir()
    a, b = tmp_path / "ha" / "a.npy", tmp_path / "hb" / "b.npy"
    np.save(a, np.ones(8))
    np.save(b, np.full(8, 2.0))
    runs = {
        ex: shoal.simulate(
            two_readers(),
            nodes=2,
            datasets={"a": a, "b": b},
            partition=partition,
            executor=ex,
            workers=2,
            run_dir=tmp_path / ex,
        )
        for ex in ("process", "bwrap")
    }
    for ex, run in runs.items():
        assert run.ok, (ex, run.reason, [f.traceback for f in run.failures])
        own_a = run.results.select("own", alias="ra")
        own_b = run.results.select("own", alias="rb")
        copies = 2 if partition is None else 1  # each node has all of it, or a share
        assert sum(own_a.values()) == 8.0 * copies, (ex, own_a)
        assert sum(own_b.values()) == 16.0 * copies, (ex, own_b)
    plain, boxed = runs["process"], runs["bwrap"]
    assert all(isinstance(v, float) for v in plain.results.select("other", alias="ra").values())
    assert all(isinstance(v, float) for v in plain.results.select("other", alias="rb").values())
    for alias in ("ra", "rb"):
        assert set(boxed.results.select("other", alias=alias).values()) == {"FileNotFoundError"}
