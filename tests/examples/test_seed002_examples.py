"""Seed 002's MapReduce and DynamicSwarm, as the seed writes them (only imports changed),
end to end in the simulator, through ``shoal.simulate`` and ``shoal simulate FILE.py``,
with their answers checked against a direct computation (issue 15)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

import shoal

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAPREDUCE = EXAMPLES / "seed002_mapreduce"
DYNAMIC = EXAMPLES / "seed002_dynamic"
TEXTS = EXAMPLES / "mapreduce_wordcount" / "data"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"seed002_{path.parent.name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def direct_word_count() -> Counter[str]:
    """The answer: the words of every file, counted on this one machine."""
    mapper = load(MAPREDUCE / "modules" / "map.py")
    counts: Counter[str] = Counter()
    for path in sorted(TEXTS.glob("*.txt")):
        counts.update(mapper.count_words(path.read_text(encoding="utf-8")))
    return counts


def squares_below(n: int) -> int:
    return sum(k * k for k in range(n))


@pytest.mark.timeout(120)
def test_seed002_mapreduce_counts_every_word_once() -> None:
    swarm = load(MAPREDUCE / "swarm.py").MapReduce()
    run = shoal.simulate(swarm, nodes=4, datasets={"texts": TEXTS}, partition="iid", seed=1)
    assert run.status == "succeeded"
    assert Counter(run.globals["counts"]) == direct_word_count()
    assert run.globals["mappers"] == [f"mapper_{i}" for i in range(10)]


@pytest.mark.timeout(120)
def test_seed002_dynamic_swarm_sizes_its_workers_from_a_global() -> None:
    swarm = load(DYNAMIC / "swarm.py").DynamicSwarm()
    swarm.set_global("num_workers", 7)  # the seed's get_global("num_workers", 5)
    run = shoal.simulate(swarm, nodes=3, seed=0)
    assert run.status == "succeeded"
    assert run.globals["workers"] == [f"worker_{i}" for i in range(7)]
    assert run.globals["total"] == squares_below(70)


def _simulate_cli(tmp_path: Path, swarm: Path, *args: str) -> dict[str, object]:
    options = ["--run-dir", str(tmp_path / "run"), "--json", str(tmp_path / "o.json")]
    out = subprocess.run(
        [sys.executable, "-m", "shoal", "simulate", str(swarm), "--nodes", "3", *args, *options],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary: dict[str, object] = json.loads((tmp_path / "o.json").read_text())
    assert summary["status"] == "succeeded"
    globals_ = summary["globals"]
    assert isinstance(globals_, dict)
    return globals_


@pytest.mark.timeout(180)
def test_seed002_mapreduce_through_the_cli(tmp_path: Path) -> None:
    got = _simulate_cli(
        tmp_path, MAPREDUCE / "swarm.py", "--dataset", f"texts={TEXTS}", "--partition", "iid"
    )
    assert Counter(got["counts"]) == direct_word_count()


@pytest.mark.timeout(180)
def test_seed002_dynamic_swarm_through_the_cli(tmp_path: Path) -> None:
    got = _simulate_cli(tmp_path, DYNAMIC / "swarm.py")
    assert got["total"] == squares_below(50)  # the seed's default of 5 workers
