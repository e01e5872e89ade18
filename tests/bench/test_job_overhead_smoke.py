"""The FedJob benchmark's shoal side runs end to end (2 clients, 1 round) so it cannot rot.

NVIDIA FLARE's side needs its own virtual environment (a download), so it is left out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent.parent / "bench" / "job_overhead.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_job_overhead_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *[sys.executable, str(BENCH), "--clients", "2", "--rounds", "1"],
            *["--systems", "shoal", "--json", str(tmp_path / "r.json")],
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| N | figure | shoal |" in out.stdout, out.stdout
    assert "| 2 | run | shoal: ok (1 rounds started) |" in out.stdout, out.stdout
    for figure in ("start-up s", "total wall s", "CPU s", "peak PSS MB", "final accuracy"):
        row = next(line for line in out.stdout.splitlines() if f"| 2 | {figure} |" in line)
        assert "—" not in row, row  # a number, not a gap
    (report,) = json.loads((tmp_path / "r.json").read_text())
    assert report["system"] == "shoal" and report["status"] == "succeeded"
    assert report["rounds_started"] == 1 and report["startup_s"] > 0
    assert 0.5 < report["accuracy"] <= 1.0  # one round of FedAvg on the digits learns
    assert report["peak_pss"] > 0 and report["peak_rss"] >= report["peak_pss"]
