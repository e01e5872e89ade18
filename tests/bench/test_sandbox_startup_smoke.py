"""The sandbox start-up benchmark runs end to end (2 starts each) so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shoal._exec.probe import probe_bwrap

BENCH = Path(__file__).parent.parent.parent / "bench" / "sandbox_startup.py"


def test_sandbox_startup_smoke(tmp_path: Path) -> None:
    if (why := probe_bwrap()) is not None:
        pytest.skip(why)
    out = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "2", "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| start -> exit s |" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    for name in ("process", "bwrap"):
        assert 0 < report[name]["connected_s"] <= report[name]["total_s"]
