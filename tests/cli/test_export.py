"""`shoal export` as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEEDS = Path(__file__).parent.parent / "seeds"


def shoal(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_version_and_help() -> None:
    out = shoal("--version")
    assert out.returncode == 0 and out.stdout.startswith("shoal ")
    out = shoal("--help")
    assert out.returncode == 0 and "export" in out.stdout


def test_export_writes_plan_and_bundles(tmp_path: Path) -> None:
    out = shoal(
        "export",
        f"{SEEDS / 'seed_001.py'}:FederatedLearningSwarm",
        "-o",
        str(tmp_path / "plan.json"),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert [t["alias"] for t in doc["tasks"]] == ["worker", "aggregator", "scheduler"]
    for ref in doc["modules"].values():
        digest = ref["digest"]
        assert (tmp_path / "bundles" / f"{digest.removeprefix('sha256:')}.zip").is_file()


def test_export_syntax_error_is_one_paragraph(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from shoal import Swarm\nclass S(Swarm)\n    pass\n")
    out = shoal("export", str(bad), "-o", str(tmp_path / "p.json"))
    assert out.returncode != 0
    assert "syntax error at line 2" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n\n") == 0


def test_export_class_that_is_not_a_swarm(tmp_path: Path) -> None:
    f = tmp_path / "s.py"
    f.write_text("from shoal import Swarm\nclass NotOne:\n    pass\nclass Real(Swarm):\n    pass\n")
    out = shoal("export", f"{f}:NotOne", "-o", str(tmp_path / "p.json"))
    assert out.returncode != 0
    assert "not a shoal.Swarm subclass" in out.stderr and "Real" in out.stderr
    assert "Traceback" not in out.stderr


def test_export_invalid_swarm_lists_problems(tmp_path: Path) -> None:
    f = tmp_path / "s.py"
    f.write_text(
        "from shoal import Swarm, Task, Module\n"
        "class S(Swarm):\n"
        "    def execute(self):\n"
        "        return Task(Module('nowhere.py'), maximum=0)()\n"
    )
    out = shoal("export", str(f), "-o", str(tmp_path / "p.json"))
    assert out.returncode != 0
    assert "2 problems" in out.stderr and "nowhere.py" in out.stderr
    assert "Traceback" not in out.stderr
