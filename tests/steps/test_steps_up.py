"""The same artifacts on a real deployment: ``shoal up`` (a coordinator and node agent
processes on loopback) deploys an artifact file; every estimator's answer equals pandas
on the pooled table, and the simulator's (issue 17, Must show 1 and 6)."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import shoal


def _harness() -> Any:
    """The e2e harness (``Up``: one ``shoal up`` and its CLI), loaded from its file."""
    path = Path(__file__).resolve().parents[1] / "e2e" / "conftest.py"
    spec = importlib.util.spec_from_file_location("steps_e2e_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Up = _harness().Up

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ARTIFACTS = """
from shoal.steps import (
    Artifact, Collect, CountEstimator, Finalize, GroupCountEstimator, GroupMeanEstimator,
    HistogramEstimator, MeanEstimator, Parallel, QueryFeature, SumEstimator,
    VarianceEstimator,
)

x = QueryFeature("x")
ESTIMATORS = [
    CountEstimator(),
    CountEstimator(query=x < 0.5),
    SumEstimator(feature="k", query=QueryFeature("g").isin(["a", "z"])),
    MeanEstimator(feature="x", query=~(x > 1)),
    VarianceEstimator(feature="x"),
    HistogramEstimator(feature="x", edges=[-3, -1, 0, 1, 3]),
    GroupCountEstimator(by="g", query=x < 0.5),
    GroupMeanEstimator(by="g", feature="x"),
]
# One artifact: every estimator's local step in parallel, one Finalize per result.
from shoal.steps import Aggregate, Estimate, Operation, Environment


class All(Operation):
    reads_data = True

    def run(self, env: Environment) -> None:
        for i, est in enumerate(ESTIMATORS):
            env.products[f"s{i}"] = est.local(est.frame(env.df))


class Merge(Operation):
    def run(self, env: Environment) -> None:
        for i, est in enumerate(ESTIMATORS):
            env.products[f"r{i}"] = est.merge(env.resource(f"s{i}"))


artifact = Artifact(
    steps=[Parallel(operation=All(), distribution=Collect()), Finalize(operation=Merge())],
    dataset="t",
    name="estimators",
)
"""


def _expected(table: pd.DataFrame) -> list[Any]:
    x = table.x
    return [
        len(table),
        int((x < 0.5).sum()),
        int(table[table.g.isin(["a", "z"])].k.sum()),
        x[~(x > 1)].mean(),
        x.var(),
        np.histogram(x.dropna(), bins=[-3, -1, 0, 1, 3])[0].tolist(),
        table[x < 0.5].groupby("g").size().to_dict(),
        table.groupby("g").x.mean().to_dict(),
    ]


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return set(got) == set(want) and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return got == want if not isinstance(got, dict) else got["counts"] == want
    return math.isclose(got, want)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the process checks read /proc")
    started: list[Any] = []

    def start(*args: str) -> Any:
        started.append(Up(tmp_path / f"up{len(started)}", list(args)))
        return started[-1]

    try:
        yield start
    finally:
        for one in started:
            one.close()


def test_estimators_on_shoal_up_equal_pandas_and_the_simulator(
    up: Callable[..., Any], tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    table = pd.DataFrame(
        {
            "x": rng.normal(size=90),
            "g": rng.choice(["a", "b", "z"], 90),
            "k": rng.integers(0, 9, 90),
        }
    )
    table.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "estimators.py").write_text(ARTIFACTS)
    fed = up("--nodes", "3", "--dataset", f"t={tmp_path / 't.csv'}", "--partition", "iid")
    fed.wait_ready()
    deployed = fed.shoal("deploy", str(tmp_path / "estimators.py"))
    assert deployed.returncode == 0, deployed.stderr + fed.diagnostics()
    swarm_id = deployed.stdout.strip()
    watched = fed.shoal("status", swarm_id, "--watch", "--timeout", "120")
    assert watched.returncode == 0, watched.stdout + watched.stderr + fed.diagnostics()
    with shoal.Client(fed.url, fed.token) as client:
        (products,) = client.results(swarm_id, "products", alias="step1").values()
    want = _expected(table)
    for i, value in enumerate(want):
        assert _same(products[f"r{i}"], value), (i, products[f"r{i}"], value)

    sim = shoal.simulate(
        _load(tmp_path / "estimators.py"), nodes=3, datasets={"t": tmp_path / "t.csv"},
        partition="iid", executor="inline",
    )  # fmt: skip
    for i, value in enumerate(want):  # the same answers in the simulator
        assert _same(sim.globals[f"r{i}"], value), (i, sim.globals[f"r{i}"], value)


def _load(path: Path) -> Any:
    from shoal._define.loader import load_swarm

    return load_swarm(str(path))[0]
