"""`shoal simulate` and `shoal logs` as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

SWARM = """
from shoal import Module, Swarm, Task

class Demo(Swarm):
    max_iterations = 2

    def __init__(self):
        self.set_global("greeting", "hi")
        self.worker = Task(Module("worker.py", image="{image}", datasets=["d"]), alias="worker")

    def execute(self):
        return self.worker()
"""

WORKER = """
from shoal.runtime import Task

class Worker(Task):
    def run(self):
        text = self.local.get_dataset("d").read_text()
        if "{bad}" and self.world.node_id == "{bad}":
            raise RuntimeError("corrupt shard on this node")
        self.logger.info(f"read {{len(text)}} chars")
        self.logger.metric("chars", len(text))

def main():
    Worker().run()
"""


def _write(tmp: Path, bad: str = "", image: str = "python") -> Path:
    (tmp / "swarm.py").write_text(SWARM.format(image=image))
    (tmp / "worker.py").write_text(WORKER.format(bad=bad))
    (tmp / "d.txt").write_text("hello")
    return tmp / "swarm.py"


def shoal(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_a_raising_node_fails_the_run_fast_with_its_traceback(tmp_path: Path) -> None:
    swarm = _write(tmp_path, bad="node-00003")
    t0 = time.monotonic()
    out = shoal(
        "simulate", str(swarm), "--nodes", "5", "--dataset", f"d={tmp_path / 'd.txt'}", cwd=tmp_path
    )
    assert time.monotonic() - t0 < 60
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "failed" in text and "node-00003" in text
    assert "RuntimeError: corrupt shard on this node" in text
    assert 'raise RuntimeError("corrupt shard on this node")' in text
    # The failure points to its story, which `shoal story` then tells from the run folder.
    hint = next(line for line in text.splitlines() if "its story: shoal story" in line)
    story = shoal(*hint.split("shoal ", 1)[1].split(), cwd=tmp_path)
    assert story.returncode == 0, story.stderr
    lines = story.stdout.splitlines()
    assert "scheduled on node node-00003" in lines[0]
    assert any("failed (error): RuntimeError: corrupt shard" in line for line in lines)


def test_success_json_logs_and_image_note(tmp_path: Path) -> None:
    swarm = _write(tmp_path, image="fl-pytorch:latest")
    out = shoal(
        "simulate",
        str(swarm),
        "--nodes",
        "3",
        "--dataset",
        f"d={tmp_path / 'd.txt'}",
        "--run-dir",
        "run",
        "--json",
        "out.json",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("not enforced") == 1
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["status"] == "succeeded" and summary["iterations"] == 2
    assert summary["globals"] == {"greeting": "hi"}
    assert {(m["node"], m["value"]) for m in summary["metrics"]} == {
        (f"node-0000{i}", 5.0) for i in range(3)
    }
    logs = shoal("logs", "run", "--node", "node-00001", "--iteration", "1", cwd=tmp_path)
    assert logs.returncode == 0
    lines = [ln for ln in logs.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1 and "node-00001" in lines[0] and "read 5 chars" in lines[0]


def test_nodes_dir_names_nodes_after_folders(tmp_path: Path) -> None:
    swarm = _write(tmp_path)
    for site in ("hospital-a", "hospital-b"):
        (tmp_path / "sites" / site).mkdir(parents=True)
        (tmp_path / "sites" / site / "d.txt").write_text(site)
    out = shoal("simulate", str(swarm), "--nodes-dir", "sites", "--json", "o.json", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = json.loads((tmp_path / "o.json").read_text())["metrics"]
    assert {(m["node"], m["value"]) for m in metrics} == {
        ("hospital-a", 10.0),
        ("hospital-b", 10.0),
    }


def test_bad_dataset_option_is_one_clear_line(tmp_path: Path) -> None:
    swarm = _write(tmp_path)
    out = shoal("simulate", str(swarm), "--dataset", "nonsense", cwd=tmp_path)
    assert out.returncode == 2 and "NAME=PATH" in out.stderr and "Traceback" not in out.stderr


def test_an_invalid_swarm_is_one_paragraph_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "swarm.py").write_text(
        "from shoal import Module, Swarm, Task\n"
        "class Bad(Swarm):\n"
        "    def execute(self):\n"
        "        return Task(Module('missing.py'), maximum=0)()\n"
    )
    out = shoal("simulate", str(tmp_path / "swarm.py"), "--nodes", "2", cwd=tmp_path)
    assert out.returncode == 2
    assert "2 problems" in out.stderr and "missing.py" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
