"""The coordinator load benchmark runs end to end (20 nodes, a few seconds, a small swarm)
so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent.parent / "bench" / "coord_load.py"

pytestmark = pytest.mark.timeout(180)


def test_coord_load_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--nodes",
            "20",
            "--duration",
            "10",
            "--ramp",
            "1",
            "--task-s",
            "0.1",
            "--poll-wait",
            "2",
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| endpoint | requests | errors | p50 ms | p99 ms | max ms |" in out.stdout
    for row in ("| enrol | 21 | 0 |", "| heartbeat |", "| world |", "| probe: heartbeat |"):
        assert row in out.stdout, row
    assert "| nodes connected at the end | 20 / 20 |" in out.stdout
    assert "| coordinator PSS peak / final |" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["errors"] == 0 and report["nodes_lost"] == 0
    assert report["swarm_status"] == "succeeded"
    assert report["endpoints"]["instructions"]["requests"] > 0  # empty polls came back
    assert report["coord_pss_peak"] > 0 and report["coord_cpu_s"] > 0
