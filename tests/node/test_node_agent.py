"""The node agent as a real process: isolation of secrets, failures, cancel, caches,
identity across restarts, and loss of a node."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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
from helpers import one_task, poll_for

from shoal import Swarm

pytestmark = pytest.mark.timeout(120)

# These tests pin the plain executor (they read task pids and rlimit errors on the host);
# the bwrap executor has its own in test_sandbox_*.py.
PROCESS = 'executor = "process"'


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Deployment, Coordinator, Path]]:
    root = tmp_path_factory.mktemp("site")
    numbers, secret = root / "numbers.npy", root / "secret.npy"
    np.save(numbers, np.arange(5.0))
    np.save(secret, np.zeros(3))
    with deployment(root) as d:
        coord = d.coordinator(db=f"sqlite:///{root / 'shoal.db'}", heartbeat_timeout=3.0)
        _, folder = d.node(
            coord,
            "solo",
            {"numbers": numbers, "secret": secret},
            extra=PROCESS,
            limits="memory_mb = 1024",
        )
        with coord.user() as user:
            wait_nodes(user, ["solo"])
        yield d, coord, folder


@pytest.fixture
def user(site: tuple[Deployment, Coordinator, Path]) -> Iterator[httpx.Client]:
    with site[1].user() as client:
        yield client


def _run(user: httpx.Client, swarm: Swarm) -> tuple[str, dict[str, Any]]:
    swarm_id = submit(user, swarm)
    return swarm_id, wait_status(user, swarm_id, timeout=60)


def _value(user: httpx.Client, swarm_id: str, tag: str) -> Any:
    return results(user, swarm_id, tag, alias="t")[0]["value"]


def test_tasks_get_a_scrubbed_environment_and_only_their_datasets(
    site: tuple[Deployment, Coordinator, Path], user: httpx.Client
) -> None:
    _, coord, folder = site
    body = """
self.world.results.add("env", dict(os.environ))
self.world.results.add("cwd", os.getcwd())
self.world.results.add("argv", list(sys.argv))
self.world.results.add("rows", int(self.local.get_dataset("numbers").shape[0]))
self.world.results.add("cpu", self.local.get_resources().cpu)
try:
    self.local.get_dataset("secret")
except Exception as e:
    self.world.results.add("denied", str(e))
"""
    swarm_id, status = _run(user, one_task(body, "solo", datasets=("numbers",)))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    env = _value(user, swarm_id, "env")
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "LC_CTYPE", "PYTHONPATH"}
    assert set(env) - allowed <= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    credential = (folder / "state" / "credential").read_text().strip()
    secrets = {coord.join_token, coord.user_token, credential, credential.split(":")[1]}
    for value in [*env.values(), *_value(user, swarm_id, "argv")]:
        assert not any(s in value for s in secrets)
    cwd = _value(user, swarm_id, "cwd")
    assert env["HOME"] == cwd and cwd.startswith(str(folder / "state" / "work"))
    assert _value(user, swarm_id, "rows") == 5
    assert _value(user, swarm_id, "cpu") >= 1
    denied = _value(user, swarm_id, "denied")
    assert "no dataset 'secret'" in denied and "numbers" in denied


def test_failures_carry_their_kind_node_and_traceback(user: httpx.Client) -> None:
    cases = {
        "error": ('raise ValueError("bad shard")', None, "ValueError: bad shard"),
        "crash": ("os._exit(3)", None, "exit code 3"),
        "timeout": ("time.sleep(60)", 1.0, "timed out after 1s"),
        "memory": ("bytearray(4 * 1024**3)", None, "MemoryError"),
    }
    for name, (body, timeout, expected) in cases.items():
        _, status = _run(user, one_task(body, "solo", timeout=timeout))
        assert status["status"] == "failed", name
        (failure,) = status["failures"]
        assert failure["node_id"] == "solo"
        assert failure["kind"] == {"memory": "error"}.get(name, name)
        assert expected in failure["error"] + failure["traceback"], (name, failure)
    _, traced = _run(user, one_task('raise ValueError("bad shard")', "solo"))
    assert 'raise ValueError("bad shard")' in traced["failures"][0]["traceback"]


def test_a_task_that_corrupts_its_channel_fails_as_a_crash_and_is_killed(
    user: httpx.Client,
) -> None:
    # Task code can reach the socket to its node; garbage there must end the instance
    # at once with a clear error, not leave the node reading past it until a timeout.
    body = (
        "from shoal._runtime.context import current\n"
        'current().channel._sock.sendall(b"\\0" * 7 + b"\\3" + b"\\x93\\1\\2")\n'
        "time.sleep(60)"
    )
    t0 = time.monotonic()
    _, status = _run(user, one_task(body, "solo"))
    assert time.monotonic() - t0 < 30
    assert status["status"] == "failed"
    (failure,) = status["failures"]
    assert failure["kind"] == "crash"
    assert "broke its channel to the node (malformed frame" in failure["error"], failure


def _task_pid(user: httpx.Client, swarm_id: str) -> int:
    """The pid the swarm's task printed as ``pid=N``."""

    def printed() -> int | None:
        for r in user.get(f"/v1/swarms/{swarm_id}/logs").json():
            if r["message"].startswith("pid="):
                return int(r["message"][4:])
        return None

    return poll_for(printed, 30, f"swarm {swarm_id}'s task to print its pid")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0 until its parent reaps it.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_stopping_a_swarm_kills_its_running_task(user: httpx.Client) -> None:
    swarm_id = submit(user, one_task('print(f"pid={os.getpid()}")\ntime.sleep(60)', "solo"))
    pid = _task_pid(user, swarm_id)
    assert not _gone(pid)
    user.post(f"/v1/swarms/{swarm_id}/stop").raise_for_status()
    poll_for(lambda: _gone(pid), 15, "the cancelled task to end")
    assert user.get(f"/v1/swarms/{swarm_id}").json()["status"] == "stopped"


def test_a_bundle_is_fetched_once_per_node(
    site: tuple[Deployment, Coordinator, Path], user: httpx.Client
) -> None:
    body = 'self.world.results.add("x", 1)  # fetched once'
    for _ in range(2):
        assert _run(user, one_task(body, "solo"))[1]["status"] == "succeeded"
    log = (site[2] / "agent.log").read_text()
    fetched = [line.split()[-1] for line in log.splitlines() if "fetched bundle" in line]
    assert len(fetched) == len(set(fetched))


def test_an_agent_restart_keeps_its_identity(
    site: tuple[Deployment, Coordinator, Path], user: httpx.Client
) -> None:
    d, coord, _ = site
    proc, folder = d.node(coord, "phoenix")
    wait_nodes(user, ["phoenix"])
    cred_file = folder / "state" / "credential"
    # Written right after the enrolment answer.
    poll_for(cred_file.exists, 10, "the credential file", interval=0.05)
    first = cred_file.read_text()
    assert stat.S_IMODE(cred_file.stat().st_mode) == 0o600
    kill_group(proc, signal.SIGTERM)
    restarted = time.time()
    d.node(coord, "phoenix")

    def heard_anew() -> dict[str, Any] | None:
        # Heard from the new agent (the old one may still count as connected).
        node = next(n for n in user.get("/v1/nodes").json() if n["node_id"] == "phoenix")
        return node if node["connected"] and node["last_seen"] > restarted else None

    poll_for(heard_anew, 30, "phoenix to be heard from after its restart")
    assert cred_file.read_text() == first
    assert [n["node_id"] for n in user.get("/v1/nodes").json()].count("phoenix") == 1
    body = 'self.world.results.add("ok", True)'
    status = _run(user, one_task(body, "phoenix"))[1]
    assert status["status"] == "succeeded", json.dumps(status, indent=1)


def test_a_node_that_dies_mid_task_fails_the_swarm_with_kind_lost(
    site: tuple[Deployment, Coordinator, Path], user: httpx.Client
) -> None:
    d, coord, _ = site
    proc, _ = d.node(coord, "doomed", extra=PROCESS)
    wait_nodes(user, ["doomed"])
    swarm_id = submit(user, one_task('print(f"pid={os.getpid()}")\ntime.sleep(60)', "doomed"))
    pid = _task_pid(user, swarm_id)
    kill_group(proc, signal.SIGKILL)
    status = wait_status(user, swarm_id, timeout=30)  # heartbeat timeout is 3 s
    assert status["status"] == "failed"
    assert status["failures"][0]["kind"] == "lost"
    assert "node doomed lost" in status["failures"][0]["error"]
    # The orphaned task notices its agent is gone.
    poll_for(lambda: _gone(pid), 15, "the orphaned task to end")


def test_a_chatty_task_logs_every_line_in_order(user: httpx.Client) -> None:
    body = 'for i in range(3000):\n    print(f"line {i}")\nself.logger.metric("m", 1.5)'
    swarm_id, status = _run(user, one_task(body, "solo"))
    assert status["status"] == "succeeded"
    logs = user.get(f"/v1/swarms/{swarm_id}/logs").json()
    assert [r["message"] for r in logs] == [f"line {i}" for i in range(3000)]
    assert [m["value"] for m in user.get(f"/v1/swarms/{swarm_id}/metrics").json()] == [1.5]


def test_the_agent_sends_a_tasks_last_results_with_its_done_report(user: httpx.Client) -> None:
    """``results.add`` is held back by the agent and sent with the instance's ``done``
    (one request, issue #21): a success stores every result, a large one (a blob) and a
    small one alike; so does a task that fails after adding one (as it always did); a
    task that goes on working after ``results.add`` has it sent at once, not at its end.
    """
    body = (
        'self.world.results.add("big", np.arange(300_000, dtype=np.float64))\n'
        'self.world.results.add("small", 7)'
    )
    swarm_id, status = _run(user, one_task(body, "solo", imports="import numpy as np"))
    assert status["status"] == "succeeded", status
    big = np.asarray(_value(user, swarm_id, "big"))
    assert big.shape == (300_000,) and big[-1] == 299_999
    assert _value(user, swarm_id, "small") == 7

    body = 'self.world.results.add("x", 1)\nraise ValueError("after the result")'
    swarm_id, status = _run(user, one_task(body, "solo"))
    assert status["status"] == "failed" and "after the result" in status["failures"][0]["error"]
    assert [r["value"] for r in results(user, swarm_id, "x", alias="t")] == [1]

    body = 'self.world.results.add("x", 2)\ntime.sleep(30)'
    swarm_id = submit(user, one_task(body, "solo"))
    poll_for(lambda: results(user, swarm_id, "x", alias="t"), 10, "the result, while it runs")
    assert user.get(f"/v1/swarms/{swarm_id}").json()["status"] == "running"
    user.post(f"/v1/swarms/{swarm_id}/stop").raise_for_status()


def test_a_task_cannot_publish_files_outside_its_outbox(
    site: tuple[Deployment, Coordinator, Path], user: httpx.Client
) -> None:
    credential = site[2] / "state" / "credential"
    body = f"""
from shoal._runtime.context import current
wire = {{"file": "{credential}", "offset": 0, "length": 10}}
try:
    current().channel.request("globals.set", {{"key": "loot", "value": wire}})
except Exception as e:
    self.world.results.add("refused", str(e))
"""
    swarm_id, status = _run(user, one_task(body, "solo"))
    assert status["status"] == "succeeded"
    assert "outside the task's outbox" in _value(user, swarm_id, "refused")
    assert user.get(f"/v1/swarms/{swarm_id}/globals/loot").status_code == 404


def test_a_module_whose_image_the_node_lacks_is_not_placed_and_the_agent_serves_on(
    user: httpx.Client,
) -> None:
    swarm = one_task('self.world.results.add("x", 1)', "solo")
    swarm.t.module.image = "gpu-env"  # the node offers only its default image "python"
    swarm.placement_timeout = 1.0  # how long to wait for an eligible node to join
    swarm_id, status = _run(user, swarm)
    assert status["status"] == "failed", json.dumps(status, indent=1)
    assert "solo" in status["reason"] and "lacks image 'gpu-env'" in status["reason"]
    swarm_id, status = _run(user, one_task('self.world.results.add("x", 1)', "solo"))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert _value(user, swarm_id, "x") == 1
