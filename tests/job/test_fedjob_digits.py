"""The seed's job on digits runs as its README says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).parent.parent.parent / "examples" / "fedjob_digits" / "job.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fedjob_digits_in_the_simulator(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, str(JOB), "--rounds", "3", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"final test accuracy: ([0-9.]+)", out.stdout)
    assert m is not None and float(m.group(1)) >= 0.9, out.stdout
    assert (tmp_path / "server" / "models" / "best_FL_global_model.msgpack").exists()


@pytest.mark.timeout(120)
def test_fedjob_digits_exports(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, str(JOB), "--export", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    desc = json.loads((tmp_path / "digits_fedavg" / "job.json").read_text())
    assert desc["apps"]["server"]["workflows"] == ["fed_avg"]
    assert sorted(desc["apps"]["@ALL"]["resources"]) == ["digits_fl.py", "net.py"]
    assert (tmp_path / "digits_fedavg" / "app_server" / "models" / "persistor.msgpack").exists()
