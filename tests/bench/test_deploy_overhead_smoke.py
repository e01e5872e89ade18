"""The deployment benchmark runs end to end (2 node agents, 3 rounds, shoal only) so it
cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent.parent / "bench" / "deploy_overhead.py"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_deploy_overhead_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *[sys.executable, str(BENCH), "--nodes", "2", "--rounds", "3"],
            *["--modes", "warm,cold", "--json", str(tmp_path / "r.json")],
        ],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| 2 | shoal-warm | 3 | 1/1 |" in out.stdout, out.stdout
    runs = {r["system"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    for system in ("shoal-warm", "shoal-cold"):
        r = runs[system]
        assert r["correct"] and not r["error"], r
        # 3 rounds, one aggregator stamp each: the 2 intervals between them (rounds 2..R).
        assert len(r["round_times"]) == 2 and all(t > 0 for t in r["round_times"])
        assert r["coord_cpu_per_round"] > 0 and r["node_cpu_per_round"] > 0
