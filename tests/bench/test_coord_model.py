"""The coordinator's cost model (docs/scale.md) predicts a real run's request and row
counts exactly, so a change that adds a request or a row per node fails here first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent.parent / "bench" / "coord_model.py"

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_the_cost_model_matches_a_run_of_eight_nodes() -> None:
    cmd = [sys.executable, str(BENCH), "--nodes", "8", "--iterations", "2", "--duration", "25"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=220)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "**differs**" not in out.stdout
    # N=8: 9 nodes enrol, 2 x 9 instances; per iteration 8 workers x 3 world calls + 2
    assert "| requests: world | 52 / 52 |" in out.stdout
    assert "| rows: events of the kinds below | 46 / 46 |" in out.stdout
    assert "| swarm | succeeded |" in out.stdout
