"""``shoal up`` and the user commands around it, on real processes: no process outlives
Ctrl-C or SIGTERM; results come back in the right file format, large ones through the
blob route; logs and metrics reach the coordinator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import poll_for

import shoal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SLEEPY = '''
from shoal import Module, Swarm, Task

CODE = """
import time
from shoal.runtime import Task

class Sleepy(Task):
    def run(self):
        self.logger.info("going to sleep")
        time.sleep(300)

def main():
    Sleepy().run()
"""


class Sleepy(Swarm):
    max_iterations = 1

    def __init__(self):
        self.sleeper = Task(Module(CODE, name="sleepy"), method="all", alias="sleeper")

    def execute(self):
        return self.sleeper()
'''

VALUES = '''
import numpy as np

from shoal import Module, Swarm, Task

CODE = """
import numpy as np
from shoal.runtime import Task

class Values(Task):
    def run(self):
        data = self.local.get_dataset("d")
        n = int(len(data))
        self.world.results.add("count", {"n": n, "node": self.world.node_id})
        self.world.results.add("vec", np.arange(50_000, dtype=np.float64) + n)
        self.world.results.add("mixed", {"name": "x", "w": np.ones(3)})
        self.logger.info(f"holding {n} rows")
        self.logger.metric("rows", n)

def main():
    Values().run()
"""


class Values(Swarm):
    max_iterations = 1

    def __init__(self):
        self.set_global("big", np.arange(20_000, dtype=np.float64))
        self.values = Task(Module(CODE, name="values", datasets=["d"]), alias="values")

    def execute(self):
        return self.values()
'''


FAILING = '''
from shoal import Module, Swarm, Task

CODE = """
from shoal.runtime import Task

class Picky(Task):
    def run(self):
        if self.world.node_id == "node-00001":
            raise ValueError("corrupt shard on this node")

def main():
    Picky().run()
"""


class Picky(Swarm):
    max_iterations = 1

    def __init__(self):
        self.picky = Task(Module(CODE, name="picky"), method="all", alias="picky")

    def execute(self):
        return self.picky()
'''


def wait_for(what: str, check: Callable[[], bool], timeout: float, up: Any) -> None:
    poll_for(check, timeout, what, interval=0.2, explain=up.diagnostics)


def test_ctrl_c_stops_everything_even_a_running_task(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    up = start_up("--nodes", "2")
    up.wait_ready()
    deployed = up.shoal("deploy", str(tmp_path / "sleepy.py"))
    assert deployed.returncode == 0, deployed.stderr
    swarm_id = deployed.stdout.strip()
    with shoal.Client(up.url, up.token) as client:
        wait_for(
            "the sleeping tasks never ran",
            lambda: client.status(swarm_id).tasks["sleeper"].running == 2,
            60,
            up,
        )
    runners = [p for p in up.processes() if "task_runner" in p[1]]
    assert len(runners) >= 2, up.processes()
    t0 = time.monotonic()
    assert up.signal(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 30
    up.assert_nothing_left()
    assert "stopped" in (up.tmp / "up.stderr").read_text()


def test_sigterm_stops_an_idle_federation(start_up: Callable[..., Any]) -> None:
    up = start_up("--nodes", "1")
    up.wait_ready()
    assert len(up.processes()) >= 2  # the coordinator and the agent
    assert up.signal(signal.SIGTERM) == 0
    up.assert_nothing_left()


def test_deploy_flag_runs_one_swarm_and_exits_with_its_result(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "rows.npy"
    np.save(data, np.arange(30).reshape(10, 3))
    (tmp_path / "values.py").write_text(VALUES)
    up = start_up(
        *("--nodes", "2", "--dataset", f"d={data}", "--partition", "iid"),
        *("--deploy", str(tmp_path / "values.py")),
    )
    code = up.proc.wait(120)
    assert code == 0, up.diagnostics()
    assert "succeeded" in up.stdout()
    up.assert_nothing_left()
    shares = sorted((up.state / "data" / "d").glob("node-*/rows.npy"))
    assert [len(np.load(p)) for p in shares] == [5, 5]


def test_results_logs_metrics_large_values_and_failures(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "rows.npy"
    np.save(data, np.arange(30).reshape(10, 3))
    (tmp_path / "values.py").write_text(VALUES)
    up = start_up("--nodes", "2", "--dataset", f"d={data}", "--partition", "iid")
    up.wait_ready()
    deployed = up.shoal("deploy", str(tmp_path / "values.py"))
    assert deployed.returncode == 0, deployed.stderr + up.diagnostics()
    swarm_id = deployed.stdout.strip()
    watched = up.shoal("status", swarm_id, "--watch", "--timeout", "90")
    assert watched.returncode == 0, watched.stdout + watched.stderr + up.diagnostics()

    out = up.shoal("results", swarm_id, "count", "-o", "count.json")
    assert out.returncode == 0, out.stderr
    assert "as JSON" in out.stderr
    assert json.loads((up.tmp / "count.json").read_text()) == {
        "node-00000": {"n": 5, "node": "node-00000"},
        "node-00001": {"n": 5, "node": "node-00001"},
    }
    out = up.shoal("results", swarm_id, "vec", "-o", "vec")
    assert out.returncode == 0 and "vec.npz" in out.stderr, out.stderr
    with np.load(up.tmp / "vec.npz") as npz:
        assert np.array_equal(npz["node-00001"], np.arange(50_000) + 5)
    out = up.shoal("results", swarm_id, "mixed", "-o", "mixed.json")
    assert out.returncode == 0 and "mixed.msgpack" in out.stderr, out.stderr

    with shoal.Client(up.url, up.token) as client:
        vec = client.results(swarm_id, "vec")  # > 64 KiB each: fetched as blobs
        assert set(vec) == {"node-00000", "node-00001"}
        assert np.array_equal(vec["node-00000"], np.arange(50_000) + 5)
        assert np.array_equal(client.get_global(swarm_id, "big"), np.arange(20_000))
        logs = client.logs(swarm_id, node="node-00001")
        assert [r.message for r in logs] == ["holding 5 rows"]
        assert [m.value for m in client.metrics(swarm_id, name="rows", frame=False)] == [5.0, 5.0]
        assert list(client.follow_logs(swarm_id, level="info"))[-1].message.startswith("holding")

    shown = up.shoal("logs", swarm_id, "--node", "node-00000")
    assert shown.returncode == 0, shown.stderr
    assert "holding 5 rows" in shown.stdout and "node-00001" not in shown.stdout
    followed = up.shoal("logs", swarm_id, "--follow", timeout=60)
    assert followed.returncode == 0 and followed.stdout.count("holding 5 rows") == 2

    (tmp_path / "failing.py").write_text(FAILING)
    deployed = up.shoal("deploy", str(tmp_path / "failing.py"))
    assert deployed.returncode == 0, deployed.stderr
    swarm_id = deployed.stdout.strip()
    watched = up.shoal("status", swarm_id, "--watch", "--timeout", "90")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    shown = up.shoal("status", swarm_id)
    assert shown.returncode == 0
    assert "failed" in shown.stdout and "node-00001" in shown.stdout
    assert 'raise ValueError("corrupt shard on this node")' in shown.stdout
    assert "ValueError: corrupt shard on this node" in shown.stdout


def test_credentials_flow_by_themselves_and_a_taken_port_is_named(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    up = start_up("--nodes", "1")
    up.wait_ready()
    printed = up.stdout() + (up.tmp / "up.stderr").read_text()
    assert up.token not in printed, "shoal up printed the token"
    assert str(up.state / "profile.toml") in up.stdout()
    local = up.config_home / "shoal" / "profiles" / "local.toml"
    assert str(local) in up.stdout()
    for path in (up.state / "profile.toml", local):
        assert oct(path.stat().st_mode & 0o777) == "0o600", path

    plain = up.plain_env()  # no SHOAL_COORDINATOR / SHOAL_TOKEN
    (up.tmp / "sub").mkdir()
    for folder in (up.tmp, up.tmp / "sub"):  # where `shoal up` ran, or a folder below
        shown = up.shoal("nodes", env=plain, cwd=folder)
        assert shown.returncode == 0 and "node-00000" in shown.stdout, shown.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = up.shoal("nodes", env=plain, cwd=elsewhere)
    assert lost.returncode == 2 and "no coordinator URL" in lost.stderr
    found = up.shoal("status", "--profile", "local", env=plain, cwd=elsewhere)
    assert found.returncode == 0 and "no swarms yet" in found.stderr, found.stderr

    port = up.url.rsplit(":", 1)[1]
    second = subprocess.run(
        [sys.executable, "-m", "shoal", "up", "--nodes", "1", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        env=plain,
        cwd=elsewhere,
    )
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"port {port} on 127.0.0.1 is taken" in second.stderr
    assert "--port 0" in second.stderr


KILLER = '''
from shoal import Module, Swarm, Task

CODE = """
import os, signal, time
from pathlib import Path
from shoal.runtime import Task

class Killer(Task):
    def run(self):
        marker = Path(self.world.globals["marker"])
        if self.world.node_id == "node-00001" and not marker.exists():
            marker.write_text("killed once")
            os.kill(os.getppid(), signal.SIGKILL)  # its node agent (process executor) dies
            time.sleep(300)  # and this process, orphaned, would outlive everything
        self.world.results.add("ok", 1)

def main():
    Killer().run()
"""


class Killer(Swarm):
    max_iterations = 1

    def __init__(self, marker, **task):
        self.set_global("marker", marker)
        self.work = Task(Module(CODE, name="killer"), method="all", alias="work", **task)

    def execute(self):
        return self.work()


class Quorum(Killer):
    def __init__(self):
        super().__init__(MARKER, min_results=1)


class Retried(Killer):
    def __init__(self):
        super().__init__(MARKER, retries=1)
'''


def test_a_dead_node_is_reported_and_min_results_lets_the_swarm_finish(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    swarm = tmp_path / "killer.py"
    swarm.write_text(f"MARKER = {str(tmp_path / 'marker')!r}\n" + KILLER)
    up = start_up(
        *("--nodes", "2", "--executor", "process", "--deploy", f"{swarm}:Quorum"),
    )
    code = up.proc.wait(150)
    assert code == 0, up.diagnostics()
    stderr = (up.tmp / "up.stderr").read_text()
    assert "node agent node-00001 died with exit code -9 (killed by SIGKILL)" in stderr
    assert str(up.state / "nodes" / "node-00001" / "agent.log") in stderr  # and its tail
    assert "the federation keeps running without it" in stderr
    assert "succeeded" in up.stdout()
    up.assert_nothing_left()  # the orphaned task process too


def test_restart_nodes_starts_a_dead_agent_again_and_ctrl_c_leaves_nothing(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    swarm = tmp_path / "killer.py"
    swarm.write_text(f"MARKER = {str(tmp_path / 'marker')!r}\n" + KILLER)
    up = start_up("--nodes", "2", "--executor", "process", "--restart-nodes")
    up.wait_ready()
    deployed = up.shoal("deploy", f"{swarm}:Retried")
    assert deployed.returncode == 0, deployed.stderr + up.diagnostics()
    watched = up.shoal("status", deployed.stdout.strip(), "--watch", "--timeout", "90")
    assert watched.returncode == 0, watched.stdout + watched.stderr + up.diagnostics()
    stderr = (up.tmp / "up.stderr").read_text()
    assert "node agent node-00001 died with exit code -9" in stderr
    assert "restarted it (restart 1 of at most 5)" in stderr
    nodes = up.shoal("nodes")
    assert nodes.stdout.count("node-0000") == 2, nodes.stdout
    assert up.signal(signal.SIGINT) == 0
    up.assert_nothing_left()


def test_a_node_agent_killed_from_outside_leaves_the_federation_running(
    start_up: Callable[..., Any],
) -> None:
    up = start_up("--nodes", "2")
    up.wait_ready()
    [agent] = [pid for pid, cmd in up.processes() if "node-00001/node.toml" in cmd]
    os.kill(agent, signal.SIGKILL)
    stderr = up.tmp / "up.stderr"
    wait_for(
        "shoal up to report the death",
        lambda: "node agent node-00001 died with exit code -9" in stderr.read_text(),
        30,
        up,
    )
    assert up.proc.poll() is None, up.diagnostics()  # still running
    nodes = up.shoal("nodes")
    assert nodes.returncode == 0 and "node-00000" in nodes.stdout, nodes.stderr
    assert up.signal(signal.SIGINT) == 0
    up.assert_nothing_left()


def test_the_coordinators_death_stops_everything_with_its_reason(
    start_up: Callable[..., Any],
) -> None:
    up = start_up("--nodes", "1")
    up.wait_ready()
    [coordinator] = [pid for pid, cmd in up.processes() if " coordinator start " in cmd]
    os.kill(coordinator, signal.SIGKILL)
    assert up.proc.wait(45) == 1, up.diagnostics()
    assert "the coordinator died with exit code -9" in (up.tmp / "up.stderr").read_text()
    up.assert_nothing_left()
