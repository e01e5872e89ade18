"""Every estimator, with and without filters and groups, equals pandas on the pooled
data, run as an artifact in the simulator (issue 17, Must show 1).

Three nodes hold different rows; group key "z" (and k == 7) exist only at the last node.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import shoal
from shoal import NodeProfile
from shoal.steps import (
    CountEstimator,
    Estimator,
    GroupCountEstimator,
    GroupMeanEstimator,
    HistogramEstimator,
    MeanEstimator,
    QuantileEstimator,
    QueryFeature,
    SumEstimator,
    VarianceEstimator,
)

pytestmark = pytest.mark.timeout(120)

x, g, k = QueryFeature("x"), QueryFeature("g"), QueryFeature("k")
FILTER = (x < 0.5) & g.notnull()
EDGES = [-3.0, -1.0, 0.0, 0.5, 1.0, 3.0]


def _parts() -> list[pd.DataFrame]:
    rng = np.random.default_rng(7)
    parts = []
    for i, (n, keys) in enumerate([(40, ["a", "b"]), (25, ["b"]), (30, ["a", "z"])]):
        df = pd.DataFrame(
            {
                "x": rng.normal(size=n),
                "g": rng.choice(keys, n),
                "k": rng.integers(0, 3, n) + (7 if i == 2 else 0) * rng.integers(0, 2, n),
            }
        )
        df.loc[rng.choice(n, 3, replace=False), "x"] = np.nan
        df.loc[rng.choice(n, 2, replace=False), "g"] = None
        parts.append(df)
    return parts


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[NodeProfile], pd.DataFrame]:
    root = tmp_path_factory.mktemp("steps_fleet")
    nodes, parts = [], _parts()
    for i, df in enumerate(parts):
        path = Path(root) / f"part{i}.csv"
        df.to_csv(path, index=False)
        nodes.append(NodeProfile(name=f"n{i}", datasets={"t": path}))
    pooled = pd.concat([pd.read_csv(Path(root) / f"part{i}.csv") for i in range(3)])
    return nodes, pooled


def _run(est: Estimator, nodes: list[NodeProfile], executor: str = "inline") -> Any:
    run = shoal.simulate(est.artifact(dataset="t"), nodes=nodes, executor=executor)
    return run.globals["result"]


def _filtered(pooled: pd.DataFrame, filtered: bool) -> pd.DataFrame:
    return pooled[(pooled.x < 0.5) & pooled.g.notna()] if filtered else pooled


@pytest.mark.parametrize("filtered", [False, True])
def test_scalar_estimators_equal_pandas(fleet, filtered: bool) -> None:  # type: ignore[no-untyped-def]
    nodes, pooled = fleet
    df = _filtered(pooled, filtered)
    query = FILTER if filtered else None
    assert _run(CountEstimator(query=query), nodes) == len(df)
    assert _run(CountEstimator(feature="x", query=query), nodes) == df.x.count()
    assert _run(SumEstimator(feature="k", query=query), nodes) == df.k.sum()  # ints: exact
    assert math.isclose(_run(SumEstimator(feature="x", query=query), nodes), df.x.sum())
    assert math.isclose(_run(MeanEstimator(feature="x", query=query), nodes), df.x.mean())
    assert math.isclose(_run(VarianceEstimator(feature="x", query=query), nodes), df.x.var())
    hist = _run(HistogramEstimator(feature="x", edges=EDGES, query=query), nodes)
    assert hist["counts"] == np.histogram(df.x.dropna(), bins=EDGES)[0].tolist()


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_quantile_is_within_its_stated_bound(fleet, q: float) -> None:  # type: ignore[no-untyped-def]
    nodes, pooled = fleet
    got = _run(QuantileEstimator(feature="x", q=q, low=-5.0, high=5.0, bins=1000), nodes)
    assert abs(got["value"] - pooled.x.quantile(q)) <= got["error_bound"]
    assert got["error_bound"] <= 0.2  # a few bins of width 0.01 at most, on this data


@pytest.mark.parametrize("filtered", [False, True])
@pytest.mark.parametrize("by", ["g", "k"])
def test_group_estimators_equal_pandas_with_keys_only_at_later_nodes(fleet, filtered, by) -> None:  # type: ignore[no-untyped-def]
    nodes, pooled = fleet
    df = _filtered(pooled, filtered)
    query = FILTER if filtered else None
    counts = _run(GroupCountEstimator(by=by, query=query), nodes)
    assert counts == {_key(key): n for key, n in df.groupby(by).size().items()}
    assert ("z" in counts) if by == "g" else (7 in counts)
    means = _run(GroupMeanEstimator(by=by, feature="x", query=query), nodes)
    expected = df.groupby(by).x.mean()
    assert set(means) == {_key(key) for key in expected.index}
    for key, value in expected.items():
        got = means[_key(key)]
        assert (math.isnan(got) and math.isnan(value)) or math.isclose(got, value)


def _key(key: Any) -> Any:
    return key.item() if hasattr(key, "item") else key


def test_a_filter_on_a_missing_column_fails_the_run_naming_the_columns(fleet) -> None:  # type: ignore[no-untyped-def]
    nodes, _ = fleet
    with pytest.raises(shoal.SwarmFailedError, match=r"the data has \['x', 'g', 'k'\]"):
        _run(CountEstimator(query=QueryFeature("age") > 1), nodes)
