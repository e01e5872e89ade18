"""`shoal simulate` and `shoal logs` as a new user meets them (issue 16): a stuck task
is named and fails the run at the task timeout, Ctrl-C stops cleanly, errors help.
Real processes, real files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import poll_for

SWARM = """
from shoal import Module, Swarm, Task

class Demo(Swarm):
    max_iterations = {iterations}

    def __init__(self):
        self.worker = Task(Module("worker.py", datasets={datasets}), alias="worker")

    def execute(self):
        return self.worker()
"""

WORKER = """
import time
from shoal.runtime import Task

class Worker(Task):
    def run(self):
        self.logger.info("working on " + self.world.node_id)
        self.logger.warning("a warning from " + self.world.node_id)
        self.logger.metric("m", 1.0)
        if self.world.node_id == "{stuck}":
            open("stuck.marker", "w").close()  # (in the run's working folder)
            time.sleep(10**6)  # never returns; the task declares no timeout

def main():
    Worker().run()
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def _write(tmp: Path, stuck: str = "", iterations: int = 1, datasets: str = "[]") -> Path:
    (tmp / "swarm.py").write_text(SWARM.format(iterations=iterations, datasets=datasets))
    (tmp / "worker.py").write_text(WORKER.format(stuck=stuck))
    return tmp / "swarm.py"


def shoal(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
    )


def test_a_task_that_sleeps_forever_fails_the_run_at_the_task_timeout_naming_node_and_task(
    tmp_path: Path,
) -> None:
    swarm = _write(tmp_path, stuck="node-00001")
    # A terminal (FORCE_COLOR), so that the live display draws as a user sees it.
    out = shoal(
        "simulate", str(swarm), "--nodes", "3", "--task-timeout", "3", "--run-dir", "run",
        cwd=tmp_path, env={"FORCE_COLOR": "1", "COLUMNS": "120"},
    )  # fmt: skip
    text = ANSI.sub("", out.stdout + out.stderr)
    assert out.returncode == 1, text
    assert "time out after 3s (--task-timeout)" in text  # the default is shown up front
    # While it hung, the live display listed it: task, node, how long it has run.
    ages = re.findall(r"worker\s+node-00001\s+0\s+(\d+\.\d)s\s+3\.0s", text)
    assert ages and max(map(float, ages)) >= 1.0, text
    # The failure names the user's stuck task and its node, and the knobs.
    assert "failed worker on node node-00001" in text
    assert "timed out after 3s, the run's default task timeout" in text
    assert "bug in shoal" not in text


def test_running_view_lists_the_oldest_instances_with_node_age_and_timeout() -> None:
    from rich.console import Console

    from shoal._cli.render import running_view

    class R:
        def __init__(self, node: str, age: float) -> None:
            self.alias, self.node_id, self.iteration = "worker", node, 2
            self.age_s, self.timeout_s = age, 600.0

    console = Console(width=100, record=True)
    console.print(running_view([R(f"node-{i:05d}", 700.0 - i) for i in range(8)], limit=3))
    text = console.export_text()
    assert "running now: 8 instance(s), oldest first" in text
    assert re.search(r"worker\s+node-00000\s+2\s+11m40s\s+10m00s", text)
    assert "node-00003" not in text and "... and 5 more" in text


def test_ctrl_c_stops_cleanly_keeps_logs_and_metrics_and_marks_the_run_stopped(
    tmp_path: Path,
) -> None:
    swarm = _write(tmp_path, stuck="node-00002", iterations=3)
    run_dir = tmp_path / "run"
    # A session of its own, so that SIGINT goes to its whole process group, as a
    # terminal's Ctrl-C does (the driver and, unless they are elsewhere, its workers).
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "simulate", str(swarm), "--nodes", "3",
         "--workers", "2", "--run-dir", str(run_dir)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        poll_for(lambda: (tmp_path / "stuck.marker").exists(), 60, "the stuck task to start")
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = stdout + stderr
    assert proc.returncode == 130, text
    assert "stopped after 1 iteration(s)" in text and "stopped by the user (Ctrl-C)" in text
    assert "KeyboardInterrupt" not in text and "Traceback" not in text, text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["reason"] == "stopped by the user (Ctrl-C)"
    assert {m["node"] for m in summary["metrics"]} >= {"node-00000", "node-00001"}
    logs = [json.loads(line) for line in (run_dir / "logs.jsonl").read_text().splitlines()]
    assert {r["node_id"] for r in logs} >= {"node-00000", "node-00001", "node-00002"}
    # `shoal logs` reads the stopped run.
    out = shoal("logs", str(run_dir), "--node", "node-00002", cwd=tmp_path)
    assert out.returncode == 0 and "working on node-00002" in out.stdout, out.stderr
    # Nothing of the run is left running (its workers were stopped with it).
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(run_dir).encode() in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:
            continue
    assert left == [], f"processes of the run still alive: {left}"


def test_a_misspelt_dataset_is_named_with_the_likely_fix(tmp_path: Path) -> None:
    swarm = _write(tmp_path, datasets='["digits"]')
    (tmp_path / "d.txt").write_text("x")
    out = shoal("simulate", str(swarm), "--nodes", "2", "--dataset", "digit=d.txt", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join(out.stderr.split())
    assert "task 'worker' needs dataset 'digits', which no node has" in text
    assert "dataset 'digit' was given and not used (did you mean 'digits'?)" in text
    assert "Traceback" not in text


def test_logs_names_unknown_tasks_and_nodes_takes_a_minimum_level_and_a_missing_folder(
    tmp_path: Path,
) -> None:
    swarm = _write(tmp_path)
    out = shoal("simulate", str(swarm), "--nodes", "3", "--run-dir", "run", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    # The default task timeout is shown up front, as the engine has it.
    from shoal._engine.timers import DEFAULT_TASK_TIMEOUT_S

    assert f"time out after {DEFAULT_TASK_TIMEOUT_S:g}s (--task-timeout)" in out.stdout

    def logs(*args: str) -> subprocess.CompletedProcess[str]:
        return shoal("logs", *args, cwd=tmp_path)

    out = logs("run", "--task", "wroker")
    assert out.returncode == 2 and out.stdout == ""
    text = " ".join(out.stderr.split())
    assert "task 'wroker' is unknown in run run (did you mean 'worker'?)" in text
    assert "known tasks: worker" in text
    out = logs("run", "--node", "node-7")
    assert out.returncode == 2
    assert "node 'node-7' is unknown" in out.stderr
    assert "known nodes: node-00000, node-00001, node-00002" in " ".join(out.stderr.split())
    # --level is a minimum: warning shows warnings (and errors), not info.
    out = logs("run", "--level", "warning")
    assert out.returncode == 0 and out.stdout.count("a warning from") == 3, out.stderr
    assert "working on" not in out.stdout
    out = logs("run", "--level", "info")
    assert out.stdout.count("a warning from") == 3 and out.stdout.count("working on") == 3
    assert logs("run", "--level", "error").stdout == ""
    out = logs("run", "--level", "loud")
    assert out.returncode == 2 and "debug, info, warning, error" in out.stderr
    # A run folder that does not exist is said to be one, not taken for a swarm id.
    out = logs(".shoal/runs/20990101-000000")
    assert out.returncode == 2
    assert "run folder .shoal/runs/20990101-000000 does not exist" in out.stderr
    assert "coordinator" not in out.stderr
