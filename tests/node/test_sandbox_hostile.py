"""Hostile task code against a real coordinator and a real node agent running the
``bwrap`` executor: every attempt to get out is denied or stopped, each stopped
instance fails with a reason naming the limit, and the agent goes on serving."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from deploy_harness import (
    Coordinator,
    Deployment,
    deployment,
    kill_group,
    results,
    submit,
    wait_nodes,
    wait_status,
)
from helpers import one_task as _one_task
from helpers import poll_for, task_module

import shoal
from shoal import Swarm, Task
from shoal._exec.cgroups import Cgroups
from shoal._exec.probe import probe_bwrap

pytestmark = [pytest.mark.timeout(180)]

SECRET_ENV = "SHOAL_TEST_AGENT_SECRET"
MEMORY_MB, MAX_PROCESSES, CPU_SECONDS = 256, 64, 4


def one_task(body: str, node: str, datasets: tuple[str, ...] = ()) -> Swarm:
    """A one-iteration swarm whose task ``t`` runs ``body`` on ``node``."""
    return _one_task(body, node, imports="import os, socket, sys, time", datasets=datasets)


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def jail(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Deployment, Coordinator, Path, Path, Any]]:
    if (why := probe_bwrap()) is not None:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("jail")
    mine, other = root / "data" / "mine.npy", root / "data" / "other.npy"
    mine.parent.mkdir()
    np.save(mine, np.arange(4.0))
    np.save(other, np.ones(2))
    (root / "host-secret.txt").write_text("the host's private key")  # like ~/.ssh/id_rsa
    os.environ[SECRET_ENV] = "s3cr3t-of-the-agent"  # inherited by the agent process
    try:
        with deployment(root) as d:
            coord = d.coordinator(db=f"sqlite:///{root / 'shoal.db'}")
            proc, folder = d.node(
                coord,
                "jail",
                {"mine": mine, "other": other},
                extra='executor = "bwrap"',
                limits=f"memory_mb = {MEMORY_MB}\nmax_processes = {MAX_PROCESSES}\n"
                f"cpu_seconds = {CPU_SECONDS}",
            )
            with coord.user() as user:
                wait_nodes(user, ["jail"])
            yield d, coord, folder, root, proc
    finally:
        del os.environ[SECRET_ENV]


@pytest.fixture
def user(jail: tuple[Deployment, Coordinator, Path, Path, Any]) -> Iterator[httpx.Client]:
    with jail[1].user() as client:
        yield client


def _run(user: httpx.Client, swarm: Swarm) -> tuple[str, dict[str, Any]]:
    swarm_id = submit(user, swarm)
    return swarm_id, wait_status(user, swarm_id, timeout=90)


def _failure(status: dict[str, Any]) -> dict[str, Any]:
    assert status["status"] == "failed", json.dumps(status, indent=1)
    (failure,) = status["failures"]
    assert failure["node_id"] == "jail"
    return dict(failure)


PROBES = """
import glob
found = {}
def attempt(name, fn):
    try:
        found[name] = "allowed: " + repr(fn())[:200]
    except BaseException as e:
        found[name] = f"denied: {type(e).__name__}: {e}"
def read(path):
    with open(path, "rb") as f:
        return f.read()
def write(path):
    with open(path, "ab") as f:
        f.write(b"tampered")
def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3):
        return "connected"
def outside():
    with socket.create_connection(("1.1.1.1", 80), timeout=3):
        return "connected"
def environs():
    seen = []
    for p in glob.glob("/proc/[0-9]*/environ"):
        try:
            seen.append(read(p).decode(errors="replace"))
        except OSError:
            pass
    return seen
mine = self.local.get_dataset_path("mine")
attempt("host_file", lambda: read(HOST_SECRET))
attempt("credential", lambda: read(CREDENTIAL))
attempt("other_dataset", lambda: read(OTHER))
attempt("repo_file", lambda: read(REPO_FILE))
for i, path in enumerate(HOME_FILES):  # e.g. /root/.bashrc, like ~/.ssh/id_rsa
    attempt(f"home_file_{i}", lambda: read(path))
attempt("write_dataset", lambda: write(mine))
attempt("tcp_loopback", lambda: connect(PORT))
attempt("tcp_outside", outside)
attempt("read_own_dataset", lambda: len(read(mine)))
attempt("write_workdir", lambda: write(os.path.join(os.getcwd(), "scratch")))
found["env"] = json.dumps(dict(os.environ))
found["proc_environs"] = json.dumps(environs())
found["root_listing"] = json.dumps(sorted(os.listdir("/")))
found["test_listing"] = json.dumps(sorted(os.listdir(os.path.dirname(HOST_SECRET))))
found["data_listing"] = json.dumps(sorted(os.listdir(os.path.dirname(mine))))
found["state_listing"] = json.dumps(sorted(os.listdir(STATE)))
found["pids"] = json.dumps(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
self.world.results.add("probes", found)
"""


def test_escapes_are_denied_and_secrets_invisible(
    jail: tuple[Deployment, Coordinator, Path, Path, Any], user: httpx.Client
) -> None:
    _, coord, folder, root, _ = jail
    server = Listener()
    state = folder / "state"
    repo_file = Path(shoal.__file__).resolve().parents[2] / "pyproject.toml"
    home_files = [str(p) for p in sorted(Path.home().glob("*")) if p.is_file()][:3]
    home_files += [str(p) for p in sorted(Path.home().glob(".*")) if p.is_file()][:3]
    consts = {
        "HOST_SECRET": str(root / "host-secret.txt"),
        "CREDENTIAL": str(state / "credential"),
        "OTHER": str(root / "data" / "other.npy"),
        "REPO_FILE": str(repo_file),
        "PORT": server.port,
        "STATE": str(state),
        "HOME_FILES": home_files,
    }
    body = "import json\n" + "".join(f"{k} = {v!r}\n" for k, v in consts.items()) + PROBES
    try:
        swarm_id, status = _run(user, one_task(body, "jail", datasets=("mine",)))
    finally:
        server.close()
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    found = results(user, swarm_id, "probes", alias="t")[0]["value"]

    hidden = ["host_file", "credential", "other_dataset"]
    hidden += [f"home_file_{i}" for i in range(len(home_files))]
    for name in hidden:
        assert found[name].startswith("denied: FileNotFoundError"), (name, found[name])
    if repo_file.exists():  # a source checkout: the repository is not visible as a whole
        assert found["repo_file"].startswith("denied: FileNotFoundError"), found["repo_file"]
    assert "Read-only file system" in found["write_dataset"], found["write_dataset"]
    assert found["tcp_loopback"].startswith("denied: ConnectionRefusedError")
    assert found["tcp_outside"].startswith("denied: OSError"), found["tcp_outside"]
    assert "unreachable" in found["tcp_outside"]
    assert server.accepted == 0
    assert found["read_own_dataset"] == f"allowed: {(root / 'data' / 'mine.npy').stat().st_size}"
    assert found["write_workdir"].startswith("allowed")

    credential = (state / "credential").read_text().strip()
    secrets = [coord.join_token, coord.user_token, credential, "s3cr3t-of-the-agent"]
    for key in ("env", "proc_environs"):
        assert not any(s in found[key] for s in secrets), (key, found[key])
    assert SECRET_ENV not in json.loads(found["env"])
    # Of this test's folder only the paths leading to what the instance needs; of its
    # datasets folder only its own dataset; of the agent's state no credential.
    assert json.loads(found["test_listing"]) == ["data", "nodes"]
    assert json.loads(found["data_listing"]) == ["mine.npy"]
    assert set(json.loads(found["state_listing"])) <= {"work", "run", "cache"}
    assert "home" not in json.loads(found["root_listing"])
    assert len(json.loads(found["pids"])) <= 3  # its own PID namespace: bwrap and itself
    assert np.load(root / "data" / "mine.npy").tolist() == [0.0, 1.0, 2.0, 3.0]  # untouched


FORK_BOMB = """
kids = 0
while True:  # fork without bound; each child holds its slot
    if os.fork() == 0:
        while True:
            time.sleep(1)
    kids += 1
"""

MEMORY_HOG = """
hog = []
while True:  # touched memory, not just reserved
    hog.append(b"x" * (16 << 20))
"""

CPU_SPIN = """
while True:
    pass
"""


def _needs_cgroup(controller: str | None) -> None:
    """Skip where the agent cannot get this cgroup controller (a fork bomb must not run
    unbounded on a test machine); say why."""
    if controller is None:
        return
    found = Cgroups.detect()
    if not isinstance(found, Cgroups) or controller not in found.controllers:
        why = found if isinstance(found, str) else f"only {sorted(found.controllers)}"
        pytest.skip(f"no writable {controller} cgroup here ({why})")


@pytest.mark.parametrize(
    ("body", "reason", "controller"),
    [
        (FORK_BOMB, f"process limit of {MAX_PROCESSES} reached", "pids"),
        (
            MEMORY_HOG,
            f"memory limit of {MEMORY_MB} MB exceeded (killed by the cgroup OOM killer)",
            "memory",
        ),
        (CPU_SPIN, f"CPU time limit of {CPU_SECONDS} s exceeded (SIGXCPU)", None),
    ],
    ids=["fork-bomb", "memory-hog", "cpu-spin"],
)
def test_a_runaway_task_is_stopped_with_the_limit_named(
    jail: tuple[Deployment, Coordinator, Path, Path, Any],
    user: httpx.Client,
    body: str,
    reason: str,
    controller: str | None,
) -> None:
    _needs_cgroup(controller)
    _, _, folder, _, agent = jail
    t0 = time.monotonic()
    _, status = _run(user, one_task(body, "jail"))
    failure = _failure(status)
    assert failure["error"].startswith(reason), failure
    assert time.monotonic() - t0 < 60
    assert agent.poll() is None, "the agent died"
    _assert_no_cgroups_left(agent.pid)
    assert not _task_processes(folder), "a sandboxed process outlived its instance"


def test_the_agent_keeps_serving_after_hostile_instances(
    jail: tuple[Deployment, Coordinator, Path, Path, Any], user: httpx.Client
) -> None:
    _needs_cgroup("pids")
    _needs_cgroup("memory")
    _, status = _run(user, one_task(FORK_BOMB, "jail"))
    assert _failure(status)["error"].startswith("process limit")
    _, status = _run(user, one_task(MEMORY_HOG, "jail"))
    assert _failure(status)["error"].startswith("memory limit")
    swarm_id, status = _run(user, one_task('self.world.results.add("ok", 41 + 1)', "jail"))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert results(user, swarm_id, "ok", alias="t")[0]["value"] == 42


def test_stopping_a_swarm_kills_its_sandbox(
    jail: tuple[Deployment, Coordinator, Path, Path, Any], user: httpx.Client
) -> None:
    _, _, folder, _, agent = jail
    swarm_id = submit(user, one_task('print("up")\ntime.sleep(120)', "jail"))
    poll_for(lambda: _task_processes(folder), 30, "the task to start")
    user.post(f"/v1/swarms/{swarm_id}/stop").raise_for_status()
    poll_for(lambda: not _task_processes(folder), 15, "the cancelled task to end")
    assert wait_status(user, swarm_id, timeout=15)["status"] == "stopped"
    _assert_no_cgroups_left(agent.pid)


def test_a_sandbox_dies_with_its_agent(
    jail: tuple[Deployment, Coordinator, Path, Path, Any], user: httpx.Client
) -> None:
    d, coord, _, _, _ = jail
    agent, folder = d.node(coord, "doomed-jail", extra='executor = "bwrap"')
    wait_nodes(user, ["doomed-jail"])
    submit(user, one_task("time.sleep(120)", "doomed-jail"))
    poll_for(lambda: _task_processes(folder), 30, "the task to start")
    kill_group(agent, signal.SIGKILL)  # the sandbox is in a session of its own
    poll_for(lambda: not _task_processes(folder), 15, "the sandbox to end with its agent")


WRITE_VALUE = """
self.world.results.add("v", np.full(200_000, VALUE))  # 1.6 MB: a blob, cached by the node
"""

READ_VALUES = """
found = {}
# The same read as results.select(), one level down: the wires the agent hands the task
# point into this instance's view of the values it was given.
(record,) = self.world._ctx.channel.request("results.list", {"tag": "v"})
mine = record["value"]["file"]
view = os.path.dirname(mine)
found["own_value"] = os.path.getsize(mine)
found["view"] = sorted(os.listdir(view))
others = (("other_cached", OTHER_CACHED), ("other_in_view", os.path.join(view, OTHER_HEX)))
for name, path in others:
    try:
        with open(path, "rb") as f:
            found[name] = f"allowed: {len(f.read())} bytes"
    except OSError as e:
        found[name] = f"denied: {type(e).__name__}"
for name, path in (("cache", CACHE), ("cache_blobs", os.path.dirname(OTHER_CACHED))):
    try:
        found[name] = "allowed: " + ",".join(sorted(os.listdir(path)))
    except OSError as e:
        found[name] = f"denied: {type(e).__name__}"
self.world.results.add("found", found)
"""


def _pair(value: float, reader: str) -> Swarm:
    """``w`` writes a large value on the jail, ``r`` (running ``reader``) reads it there."""
    writer = task_module(f"VALUE = {value}\n" + WRITE_VALUE, "W", imports="import numpy as np")
    read = task_module(reader, "R", imports="import os\nimport numpy as np")

    class Pair(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            self.w = Task(writer, alias="w", specified_ids=["jail"])
            self.r = Task(read, alias="r", specified_ids=["jail"])

        def execute(self) -> Task:
            return self.r(self.w())

    return Pair()


def test_a_sandboxed_task_cannot_read_another_swarms_cached_value(
    jail: tuple[Deployment, Coordinator, Path, Path, Any], user: httpx.Client
) -> None:
    _, _, folder, _, _ = jail
    cache = folder / "state" / "cache"
    # Swarm A leaves its value in the node's blob cache.
    first, status = _run(user, _pair(7.0, 'self.world.results.select("v")'))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    resp = user.get(f"/v1/swarms/{first}/results/v", params={"alias": "w"})
    (row,) = msgpack.unpackb(resp.content, raw=False)
    other_hex = row["value"]["blob"].removeprefix("sha256:")
    other_cached = cache / "blobs" / other_hex
    assert other_cached.is_file(), "swarm A's value is not in the node's cache"
    # Swarm B's task, in the sandbox, looks for it.
    consts = {"OTHER_CACHED": str(other_cached), "OTHER_HEX": other_hex, "CACHE": str(cache)}
    reader = "".join(f"{k} = {v!r}\n" for k, v in consts.items()) + READ_VALUES
    second, status = _run(user, _pair(8.0, reader))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    found = results(user, second, "found", alias="r")[0]["value"]
    view = found["view"]  # its view holds the one value it was given, no other swarm's
    assert other_hex not in view and len(view) == 1, view
    own = view[0]
    assert (cache / "blobs" / own).is_file() and own != other_hex
    assert found["own_value"] == (cache / "blobs" / own).stat().st_size
    for name in ("other_cached", "other_in_view", "cache_blobs"):
        assert found[name] == "denied: FileNotFoundError", (name, found[name])
    assert found["cache"] == "allowed: bundles"  # the path to its own bundle, no blobs


def _task_processes(folder: Path) -> list[int]:
    """Live task runners of this node (found by the socket path in their argv)."""
    marker = str(folder / "state" / "run").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and b"task_runner" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _assert_no_cgroups_left(agent_pid: int) -> None:
    """The instance cgroups are removed once their instance ended (give the agent's
    thread a moment: the coordinator may learn the outcome first)."""
    found = Cgroups.detect()
    bases = set(found.bases.values()) if isinstance(found, Cgroups) else set()

    def left() -> list[Path]:
        return [p for base in bases for p in base.glob(f"shoal-{agent_pid}-*")]

    poll_for(lambda: not left(), 10, "the instance cgroups to go", explain=lambda: f"{left()}")
