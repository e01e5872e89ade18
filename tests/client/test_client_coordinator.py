"""shoal.Client and the CLI against a real coordinator process (no nodes): deploy,
status, watch, wait, stop, globals, errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import free_port, poll_for

import shoal

pytest.importorskip("shoal._coord.app")

SWARM = '''
from shoal import Module, Swarm, Task

WORKER = """
from shoal.runtime import Task

class W(Task):
    def run(self):
        self.world.results.add("n", 1)

def main():
    W().run()
"""


class Waiting(Swarm):
    """Needs a dataset no node has: it waits to be placed until it is stopped."""

    placement_timeout = 600.0
    max_iterations = 1

    def __init__(self):
        self.set_global("greeting", "hi")
        self.worker = Task(Module(WORKER, name="w", datasets=["nowhere"]), alias="worker")

    def execute(self):
        return self.worker()
'''


class Coordinator:
    def __init__(self, state: Path, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.state, self.url, self.proc, self.log = state, url, proc, log

    @property
    def token(self) -> str:
        return (self.state / "user-token").read_text().strip()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(SHOAL_COORDINATOR=self.url, SHOAL_TOKEN=self.token)
        return env

    def shoal(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shoal", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )

    def client(self) -> shoal.Client:
        return shoal.Client(self.url, self.token, timeout=10)


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    root = tmp_path_factory.mktemp("coord")
    port = free_port()
    log = root / "coordinator.log"
    argv = [sys.executable, "-m", "shoal", "coordinator", "start"]
    argv += ["--state", str(root / "state"), "--port", str(port)]
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200

        poll_for(
            healthy,
            60,
            "the coordinator to be healthy",
            ignore=(httpx.HTTPError,),
            explain=log.read_text,
        )
        yield Coordinator(root / "state", url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def swarm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("swarm") / "swarm.py"
    path.write_text(SWARM)
    return path


def test_start_prints_the_user_token_line_and_token_prints_the_join_token(
    coord: Coordinator,
) -> None:
    text = coord.log.read_text()
    assert f"export SHOAL_COORDINATOR={coord.url} SHOAL_TOKEN={coord.token}" in text
    out = coord.shoal("coordinator", "token", "--state", str(coord.state))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (coord.state / "join-token").read_text().strip()


def test_deploy_prints_only_the_id_then_status_watch_and_stop(
    coord: Coordinator, swarm_file: Path
) -> None:
    out = coord.shoal("deploy", str(swarm_file))
    assert out.returncode == 0, out.stderr
    swarm_id = out.stdout.strip()
    assert re.fullmatch(r"[0-9A-Za-z_-]+", swarm_id), out.stdout
    assert out.stdout == swarm_id + "\n"
    listed = coord.shoal("status")
    assert listed.returncode == 0 and swarm_id in listed.stdout and "Waiting" in listed.stdout
    one = coord.shoal("status", swarm_id)
    assert one.returncode == 0 and "running" in one.stdout and "worker" in one.stdout
    watcher = subprocess.Popen(
        [sys.executable, "-m", "shoal", "status", swarm_id, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=coord.env(),
    )
    try:
        time.sleep(2)
        assert watcher.poll() is None  # still following
        stopped = coord.shoal("stop", swarm_id)
        assert stopped.returncode == 0 and swarm_id in stopped.stdout
        stdout, stderr = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 1, stderr
    assert "stopped" in stdout and "Traceback" not in stderr
    with coord.client() as client:
        assert client.status(swarm_id).status == "stopped"


def test_client_deploy_wait_globals_and_errors(coord: Coordinator, swarm_file: Path) -> None:
    from shoal._define.loader import load_swarm

    swarm, _ = load_swarm(str(swarm_file))
    with coord.client() as client:
        swarm_id = client.deploy(swarm, seed=3)
        assert any(s.swarm_id == swarm_id for s in client.swarms())
        status = client.status(swarm_id)
        assert isinstance(status, shoal.SwarmStatus)
        assert status.status == "running" and "worker" in status.tasks
        assert isinstance(status.tasks["worker"], shoal.TaskCounts)
        assert client.get_global(swarm_id, "greeting") == "hi"
        with pytest.raises(shoal.ShoalError) as e:
            client.wait(swarm_id, timeout=1.0)
        assert e.value.code == "client.timeout" and swarm_id in str(e.value)
        assert client.logs(swarm_id) == [] and client.metrics(swarm_id, frame=False) == []
        assert client.results(swarm_id, "n") == {}
        client.stop(swarm_id)
        assert client.wait(swarm_id, timeout=30).status == "stopped"
        seen = list(client.watch(swarm_id, timeout=30))
        assert seen[-1].status == "stopped" and seen[-1].finished
        with pytest.raises(shoal.ShoalError) as e:
            client.status("no-such-swarm")
        assert "no-such-swarm" in str(e.value) and e.value.code != "client.unreachable"
        with pytest.raises(shoal.ShoalError, match="nothere"):
            client.get_global(swarm_id, "nothere")
    with shoal.Client(coord.url, "wrong-token") as bad, pytest.raises(shoal.ShoalError) as e:
        bad.swarms()
    assert "token" in str(e.value)


def test_cli_results_without_any_and_empty_nodes(coord: Coordinator, swarm_file: Path) -> None:
    with coord.client() as client:
        swarm_id = client.deploy(str(swarm_file))
        client.stop(swarm_id)
    out = coord.shoal("results", swarm_id, "n")
    assert out.returncode == 1 and "no results tagged 'n'" in out.stderr
    out = coord.shoal("results", swarm_id, "n", "--alias", "nope")
    assert out.returncode == 2 and "nope" in out.stderr and "Traceback" not in out.stderr
    out = coord.shoal("logs", swarm_id)
    assert out.returncode == 0 and out.stdout == ""
    out = coord.shoal("nodes")
    assert out.returncode == 0 and "no nodes have joined yet" in out.stderr


def test_wait_raises_for_a_failed_swarm_unless_told_not_to(
    coord: Coordinator, tmp_path: Path
) -> None:
    # No node has its dataset and it waits 0 s for one: the coordinator fails it at once.
    path = tmp_path / "failing.py"
    path.write_text(SWARM.replace("placement_timeout = 600.0", "placement_timeout = 0"))
    with coord.client() as client:
        swarm_id = client.deploy(str(path), task_timeout=30)
        with pytest.raises(shoal.SwarmFailedError) as e:
            client.wait(swarm_id, timeout=30)
        assert e.value.code == "swarm.failed" and swarm_id in str(e.value)
        assert "found no eligible node" in str(e.value) and "raise_on_failure=False" in str(e.value)
        assert isinstance(e.value.result, shoal.SwarmStatus)
        assert e.value.result.status == "failed"
        status = client.wait(swarm_id, timeout=30, raise_on_failure=False)
        assert status.status == "failed"
        with pytest.raises(shoal.ShoalError) as bad:
            client.deploy(str(path), task_timeout=0)
        assert bad.value.code == "client.task_timeout"
    # The coordinator refuses a bad default task timeout too (422), and stores nothing.
    body = {"plan": "{}", "bundles": {}, "seed": 0, "task_timeout_s": -1.0}
    import msgpack

    answer = httpx.post(
        f"{coord.url}/v1/swarms",
        content=msgpack.packb(body),
        headers={"Authorization": f"Bearer {coord.token}", "Content-Type": "application/msgpack"},
        timeout=10,
    )
    assert answer.status_code == 422 and "task_timeout_s" in answer.text


def test_logs_of_a_swarm_say_an_unknown_task_or_node_and_list_the_known(
    coord: Coordinator, swarm_file: Path
) -> None:
    with coord.client() as client:
        swarm_id = client.deploy(str(swarm_file))
        client.stop(swarm_id)
    out = coord.shoal("logs", swarm_id, "--task", "wroker")
    assert out.returncode == 2 and out.stdout == ""
    text = " ".join(out.stderr.split())
    assert f"task 'wroker' is unknown in swarm {swarm_id} (did you mean 'worker'?)" in text
    assert "known tasks: worker" in text
    out = coord.shoal("logs", swarm_id, "--node", "hospital-z")
    assert out.returncode == 2
    assert "node 'hospital-z' is unknown in the coordinator" in " ".join(out.stderr.split())
    out = coord.shoal("logs", swarm_id, "--task", "worker", "--level", "warning")
    assert out.returncode == 0 and out.stdout == "", out.stderr
