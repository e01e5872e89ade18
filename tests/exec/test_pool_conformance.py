"""The same scenarios against every pool-level (simulator) backend, through the
``SimExecutor`` interface only (``submit`` / ``poll`` / ``cancel`` / ``busy`` /
``close`` and the two callbacks), with a real world service, real worker processes and
real bubblewrap:

- a job that succeeds (its result reaches the store);
- a crash: the instance fails as a crash and the dead worker is replaced;
- a timeout: the driver cancels a hung instance (as it does when the engine's timeout
  fires), its worker is killed, nothing is reported for it, and the pool carries on;
- the Ray pool (``backend="ray"``): the same pool with Ray actors as its workers, on a
  real two-node Ray cluster on this machine (``helpers.ray_cluster``);
- the bwrap pool: workers grouped by their modules' declared datasets, started lazily,
  never more than ``workers`` of them, and each job sees only its module's datasets.

``inline`` runs in the driver's own process: a crash would end the driver and a hang
would block it, so those two scenarios are skipped for it (``shoal.testing`` injects
crashes and hangs instead).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal._exec.inline import InlineExecutor
from shoal._exec.jobs import Job, Kind, SimExecutor
from shoal._exec.pool import WORKER_MODULE, ProcessPoolExecutor
from shoal._exec.pool_bwrap import BwrapSandbox, bwrap_problem
from shoal._exec.pool_ray import RayPoolExecutor
from shoal._runtime.loader import Outcome
from shoal._store.memory import MemoryStore
from shoal._wire import from_wire
from shoal._world.service import InstanceInfo, NodeInfo, WorldService

pytestmark = pytest.mark.timeout(120)

TASK = """
import os, time
import numpy as np
from shoal.runtime import Task


class T(Task):
    def run(self):
        what = {what!r}
        if what == "crash":
            os._exit(3)
        if what == "hang":
            time.sleep(300)
        if what == "read":
            own = float(np.load(self.local.get_dataset_path({own!r})).sum())
            try:
                other = float(np.load(self.local.get_dataset_path({other!r})).sum())
            except OSError as e:
                other = type(e).__name__
            self.world.results.add("read", [own, other])
        self.world.results.add("v", 42)


def main():
    T().run()
"""


class Driver:
    """What the simulator's driver does with a backend, minus the engine."""

    def __init__(
        self,
        kind: str,
        run_dir: Path,
        nodes: list[NodeInfo],
        workers: int,
        ray_address: str | None = None,
    ) -> None:
        for sub in ("blobs", "modules"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.started: list[str] = []
        self.done: dict[str, tuple[Outcome, Kind]] = {}
        self.store = MemoryStore(run_dir / "blobs")
        service = WorldService(
            self.store, {n.node_id: n for n in nodes}, lambda i: None, lambda i, a, n: None
        )
        self.on_started: Callable[[str], None] = self.started.append
        self.pool: SimExecutor
        if kind == "inline":
            self.pool = InlineExecutor(service, self._started, self._done)
        elif kind == "ray":
            self.pool = RayPoolExecutor(
                service, self._started, self._done, workers, run_dir / "blobs", ray_address
            )
        else:
            sandbox = BwrapSandbox.for_run(run_dir, nodes) if kind == "bwrap" else None
            self.pool = ProcessPoolExecutor(
                service, self._started, self._done, workers, run_dir / "blobs", sandbox=sandbox
            )
        self._n = 0

    def _started(self, instance_id: str) -> None:
        self.on_started(instance_id)

    def _done(self, instance_id: str, outcome: Outcome, kind: Kind) -> None:
        self.done[instance_id] = (outcome, kind)

    def module(self, what: str, own: str = "", other: str = "") -> tuple[str, Path]:
        """A module's digest and extracted folder."""
        code = TASK.format(what=what, own=own, other=other)
        digest = "sha256:" + hashlib.sha256(code.encode()).hexdigest()
        folder = self.run_dir / "modules" / digest.removeprefix("sha256:")
        folder.mkdir(exist_ok=True)
        (folder / "shoal-module.json").write_text(json.dumps({"entry": "task"}))
        (folder / "task.py").write_text(code)
        return digest, folder

    def submit(
        self, what: str, node: str = "node-0", datasets: tuple[str, ...] = (), **kw: str
    ) -> str:
        self._n += 1
        iid = f"s/0/{what}/{node}/{self._n}"
        digest, folder = self.module(what, **kw)
        info = InstanceInfo("s", iid, node, what, 0)
        self.pool.submit(Job(info, 0, digest, folder, frozenset(datasets)))
        return iid

    def until(self, done: Callable[[], bool], timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < end, f"stuck: started {self.started}, done {self.done}"
            self.pool.poll(0.05)

    def results(self, tag: str, alias: str) -> list[str]:
        return [r.node_id for r in self.store.results_of_task("s", 0, alias, tag)]


@pytest.fixture(params=["process", "bwrap", "inline", "ray"])
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "bwrap" and (why := bwrap_problem()) is not None:
        pytest.skip(f"the bwrap pool cannot run here: {why}")
    return name


@pytest.fixture
def driver(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Driver]:
    # The Ray pool's workers are actors of a real cluster (skipped without ray, but
    # not in CI, which installs it).
    address = request.getfixturevalue("ray_cluster").address if kind == "ray" else None
    d = Driver(kind, tmp_path / "run", [NodeInfo("node-0", {})], workers=1, ray_address=address)
    try:
        yield d
    finally:
        d.pool.close()


def test_a_job_that_succeeds(driver: Driver) -> None:
    iid = driver.submit("ok")
    driver.until(lambda: iid in driver.done)
    outcome, _ = driver.done[iid]
    assert outcome.ok, outcome
    assert driver.started == [iid]
    assert driver.results("v", "ok") == ["node-0"]
    assert not driver.pool.busy()


def test_a_crash_fails_the_instance_and_replaces_its_worker(kind: str, driver: Driver) -> None:
    if kind == "inline":
        pytest.skip("inline runs in the driver's process: a crash would end the driver")
    crashed = driver.submit("crash")
    after = driver.submit("ok")  # the pool has one worker: the crash must not cost it
    driver.until(lambda: after in driver.done)
    outcome, why = driver.done[crashed]
    assert why == "crash" and not outcome.ok
    # A child process's exit status is known; Ray says why its actor died instead.
    died = "(Ray actor pid" if kind == "ray" else "(exit code 3)"
    assert outcome.error.startswith(f"the worker process died {died}"), outcome.error
    assert driver.done[after][0].ok
    assert not driver.pool.busy()


def test_a_timed_out_instance_is_cancelled_and_the_pool_carries_on(
    kind: str, driver: Driver
) -> None:
    if kind == "inline":
        pytest.skip("inline enforces no timeout: a hung instance blocks its driver")
    hung = driver.submit("hang")
    driver.until(lambda: hung in driver.started)
    time.sleep(0.3)
    actor = _ray_actor_pid(driver) if kind == "ray" else 0
    driver.pool.cancel(hung)  # what the driver does when the engine's timeout fires
    after = driver.submit("ok")
    driver.until(lambda: after in driver.done)
    assert hung not in driver.done  # nothing is reported for a cancelled instance
    assert driver.done[after][0].ok
    assert not driver.pool.busy()
    assert len(_pool_workers(driver.run_dir)) <= 1
    if kind == "ray":  # the hung instance's actor process is gone; one actor is left
        end = time.monotonic() + 60
        while Path(f"/proc/{actor}").exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert not Path(f"/proc/{actor}").exists(), f"actor process {actor} still runs"
        assert isinstance(driver.pool, RayPoolExecutor)
        assert driver.pool.workers == 1


def _ray_actor_pid(driver: Driver) -> int:
    """The pid of the Ray pool's one worker (it said so when it connected)."""
    pids = [w.proc.pid for w in getattr(driver.pool, "_workers", [])]
    assert len(pids) == 1 and pids[0] > 0, pids
    return int(pids[0])


def _pool_workers(run_dir: Path) -> list[int]:
    """The live pool workers of the run (their argv names its blob folder)."""
    marker = str(run_dir / "blobs").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            state = (entry / "stat").read_text().split()[2] if argv else "Z"
        except OSError:
            continue
        # bwrap's own processes name the worker too: count the worker only.
        program = Path(argv.split(b"\0")[0].decode(errors="replace")).name
        ours = marker in argv and WORKER_MODULE.encode() in argv
        if ours and state != "Z" and program != "bwrap":
            found.append(int(entry.name))
    return found


def test_the_bwrap_pool_shows_each_group_only_its_datasets_within_its_workers(
    tmp_path: Path,
) -> None:
    if (why := bwrap_problem()) is not None:
        pytest.skip(f"the bwrap pool cannot run here: {why}")
    data = {}
    for name, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        data[name] = tmp_path / name / f"{name}.npy"
        np.save(data[name], np.full(4, value))
    nodes = [NodeInfo(f"node-{i}", dict(data)) for i in range(2)]
    driver = Driver("bwrap", tmp_path / "run", nodes, workers=1)
    most = 0

    def count(instance_id: str) -> None:
        nonlocal most
        most = max(most, len(_pool_workers(driver.run_dir)))

    driver.on_started = count
    try:
        ids = {}
        for round_ in range(2):  # a group's worker makes way for the other's, and back
            for own, other in (("a", "b"), ("b", "a")):
                for node in ("node-0", "node-1"):
                    ids[(round_, own, node)] = driver.submit(
                        "read", node, datasets=(own,), own=own, other=other
                    )
        driver.until(lambda: all(i in driver.done for i in ids.values()))
    finally:
        driver.pool.close()
    assert all(driver.done[i][0].ok for i in ids.values()), driver.done
    rows = driver.store.results_of_task("s", 0, "read", "read")
    seen = sorted(tuple(_decode(r.value)) for r in rows)
    assert seen == [(4.0, "FileNotFoundError")] * 4 + [(8.0, "FileNotFoundError")] * 4
    assert most == 1  # never more workers than asked for


def _decode(value: Any) -> list[object]:
    out = from_wire(value)
    assert isinstance(out, list)
    return out
