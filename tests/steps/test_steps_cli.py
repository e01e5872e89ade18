"""``shoal simulate ARTIFACT.py`` and ``shoal export ARTIFACT.py`` find an Artifact in a
file as they find a Swarm (the CLI, export, deploy and ``up --deploy`` share the loader)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ARTIFACT = """
from shoal.steps import GroupCountEstimator, QueryFeature

artifact = GroupCountEstimator(by="g", query=QueryFeature("x") > 1).artifact(dataset="t")
"""


def _shoal(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


@pytest.mark.timeout(120)
def test_simulate_and_export_an_artifact_file(tmp_path: Path) -> None:
    (tmp_path / "art.py").write_text(ARTIFACT)
    table = pd.DataFrame({"x": [1, 2, 3, 4, 5, 6], "g": ["a", "b", "b", "c", "z", "z"]})
    table.to_csv(tmp_path / "t.csv", index=False)
    done = _shoal(
        "simulate", "art.py", "-n", "3", "-d", "t=t.csv", "--partition", "iid",
        "--executor", "inline", "--json", "out.json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads((tmp_path / "out.json").read_text())["globals"]["result"]
    assert result == table[table.x > 1].groupby("g").size().to_dict()

    done = _shoal("export", "art.py", "-o", "plan.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert "step0" in json.dumps(plan) and "step1" in json.dumps(plan)


@pytest.mark.timeout(120)
def test_simulate_splits_a_table_by_rows_on_a_named_label(tmp_path: Path) -> None:
    (tmp_path / "art.py").write_text(ARTIFACT)
    rows = 60
    table = pd.DataFrame({"x": range(rows), "g": ["a", "b", "c", "z"] * (rows // 4)})
    table["band"] = table.x % 3  # not a default label name: --label names it
    table.to_parquet(tmp_path / "t.parquet")
    done = _shoal(
        "simulate", "art.py", "-n", "4", "-d", "t=t.parquet", "--partition", "dirichlet:0.5",
        "--label", "band", "--executor", "inline", "--json", "out.json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads((tmp_path / "out.json").read_text())["globals"]["result"]
    assert result == table[table.x > 1].groupby("g").size().to_dict()  # every row once

    done = _shoal(
        "simulate", "art.py", "-n", "4", "-d", "t=t.parquet", "--partition", "dirichlet:0.5",
        "--label", "nope", "--executor", "inline", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "no label column 'nope'" in done.stderr + done.stdout
