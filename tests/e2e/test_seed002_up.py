"""Seed 002's MapReduce and DynamicSwarm, as the seed writes them (only imports changed),
on a real federation (``shoal up``: a coordinator and node agents on loopback), with
the simulator's answers (issue 15)."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shoal

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEXTS = EXAMPLES / "mapreduce_wordcount" / "data"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def direct_word_count() -> Counter[str]:
    """The answer: the words of every file, counted on this one machine."""
    path = EXAMPLES / "seed002_mapreduce" / "modules" / "map.py"
    spec = importlib.util.spec_from_file_location("seed002_map", path)
    assert spec and spec.loader
    mapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mapper)
    counts: Counter[str] = Counter()
    for text in sorted(TEXTS.glob("*.txt")):
        counts.update(mapper.count_words(text.read_text(encoding="utf-8")))
    return counts


def _deploy_and_wait(up: Any, swarm: Path) -> str:
    deployed = up.shoal("deploy", str(swarm))
    assert deployed.returncode == 0, deployed.stderr + up.diagnostics()
    swarm_id: str = deployed.stdout.strip()
    watched = up.shoal("status", swarm_id, "--watch", "--timeout", "150", timeout=170)
    assert watched.returncode == 0, watched.stdout + watched.stderr + up.diagnostics()
    return swarm_id


def test_seed002_mapreduce_on_shoal_up(start_up: Callable[..., Any]) -> None:
    up = start_up("--nodes", "3", "--dataset", f"texts={TEXTS}", "--partition", "iid")
    up.wait_ready()
    swarm_id = _deploy_and_wait(up, EXAMPLES / "seed002_mapreduce" / "swarm.py")
    with shoal.Client(up.url, up.token) as client:
        assert Counter(client.get_global(swarm_id, "counts")) == direct_word_count()
        assert client.get_global(swarm_id, "mappers") == [f"mapper_{i}" for i in range(10)]


def test_seed002_dynamic_swarm_on_shoal_up(start_up: Callable[..., Any]) -> None:
    up = start_up("--nodes", "3")
    up.wait_ready()
    swarm_id = _deploy_and_wait(up, EXAMPLES / "seed002_dynamic" / "swarm.py")
    with shoal.Client(up.url, up.token) as client:
        assert client.get_global(swarm_id, "total") == sum(k * k for k in range(50))
        assert client.get_global(swarm_id, "workers") == [f"worker_{i}" for i in range(5)]
