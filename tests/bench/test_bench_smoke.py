"""The simulator benchmark runs end to end (N=10, 2 rounds, no peers) so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent.parent / "bench" / "sim_overhead.py"


def test_sim_overhead_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--clients",
            "10",
            "--rounds",
            "2",
            "--peers",
            "none",
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| 10 | check | shoal: correct |" in out.stdout
    assert "per-round s (median 2..R)" in out.stdout
    import json

    report = json.loads((tmp_path / "r.json").read_text())["10"]["shoal"]
    assert report["correct"] and len(report["round_times"]) == 2
    assert report["peak_pss"] > 0 and report["cpu_s"] > 0
