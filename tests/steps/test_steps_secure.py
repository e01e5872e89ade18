"""Estimators with ``secure=True``: a secure sum over a chain (issue 17 point 6).

Run as artifacts in the simulator. The fleet is test_steps_estimators_sim's: three
nodes, group key "z" (and k in 7..9) only at node n2, which the seeded chain puts after
the first node in some runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_steps_estimators_sim import FILTER, _filtered, _parts

import shoal
from shoal import NodeProfile
from shoal._steps._secure import CHAIN, encode_vector
from shoal.privacy._secagg import FRAC_BITS
from shoal.steps import (
    CountEstimator,
    Estimator,
    GroupCountEstimator,
    GroupMeanEstimator,
    HistogramEstimator,
    MeanEstimator,
    QuantileEstimator,
    SumEstimator,
    VarianceEstimator,
)

pytestmark = pytest.mark.timeout(120)

RING = 2.0**64
EDGES = [-3.0, -1.0, 0.0, 0.5, 1.0, 3.0]


def _fleet(root: Path, parts: list[pd.DataFrame]) -> tuple[list[NodeProfile], pd.DataFrame]:
    nodes = []
    for i, df in enumerate(parts):
        path = root / f"part{i}.csv"
        df.to_csv(path, index=False)
        nodes.append(NodeProfile(name=f"n{i}", datasets={"t": path}))
    pooled = pd.concat([pd.read_csv(root / f"part{i}.csv") for i in range(len(parts))])
    return nodes, pooled


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[NodeProfile], pd.DataFrame]:
    return _fleet(Path(tmp_path_factory.mktemp("secure_fleet")), _parts())


def _run(est: Estimator, nodes: list[NodeProfile], seed: int = 0, initiator: str | None = "n1"):  # type: ignore[no-untyped-def]
    return shoal.simulate(
        est.artifact(dataset="t", initiator=initiator), nodes=nodes, executor="inline", seed=seed
    )


def _chain(run: Any) -> list[dict[str, Any]]:
    """Every running total the chain stored (what the coordinator sees), in chain order."""
    alias = [t.alias for t in run.plan.tasks][-2]  # the Sequential step
    states = [r.value[CHAIN] for r in run.results.select_all("products", alias=alias)]
    return sorted(states, key=lambda s: len(s["contributors"]))


@pytest.mark.parametrize("initiator", [None, "n1"])
@pytest.mark.parametrize("filtered", [False, True])
def test_secure_scalar_estimators_equal_pandas(
    fleet, filtered: bool, initiator: str | None
) -> None:  # type: ignore[no-untyped-def]
    nodes, pooled = fleet
    df = _filtered(pooled, filtered)
    q = FILTER if filtered else None

    def run(est: Estimator) -> Any:
        return _run(est, nodes, initiator=initiator).globals["result"]

    count = run(CountEstimator(query=q, secure=True))
    assert count == len(df) and isinstance(count, int)
    assert run(CountEstimator(feature="x", query=q, secure=True)) == df.x.count()
    total = run(SumEstimator(feature="k", query=q, secure=True))  # integers: exact
    assert total == int(df.k.sum()) and isinstance(total, int)
    assert run(SumEstimator(feature="x", query=q, secure=True)) == pytest.approx(
        df.x.sum(), abs=1e-6
    )
    assert run(MeanEstimator(feature="x", query=q, secure=True)) == pytest.approx(
        df.x.mean(), abs=1e-7
    )
    assert run(VarianceEstimator(feature="x", query=q, secure=True)) == pytest.approx(
        df.x.var(), abs=1e-6
    )
    hist = run(HistogramEstimator(feature="x", edges=EDGES, query=q, secure=True))
    assert hist["counts"] == np.histogram(df.x.dropna(), bins=EDGES)[0].tolist()
    quant = run(QuantileEstimator(feature="x", q=0.3, low=-5, high=5, query=q, secure=True))
    assert abs(quant["value"] - df.x.quantile(0.3)) <= quant["error_bound"]


def test_secure_group_estimators_equal_pandas_with_keys_first_seen_at_later_nodes(fleet) -> None:  # type: ignore[no-untyped-def]
    nodes, pooled = fleet
    later = 0
    for seed in range(4):
        run = _run(GroupCountEstimator(by="g", secure=True), nodes, seed=seed)
        assert run.globals["result"] == pooled.groupby("g").size().to_dict()
        order = _chain(run)[-1]["contributors"]
        later += order.index("n2") > 0  # "z" reaches the sum after the first node
        by_k = _run(GroupMeanEstimator(by="k", feature="x", secure=True), nodes, seed=seed)
        want = pooled.groupby("k").x.mean().to_dict()
        got = by_k.globals["result"]
        assert list(got) == sorted(want) and {7, 8, 9} <= set(got)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-7), key
        counted = _run(
            GroupCountEstimator(by="k", feature="x", query=FILTER, secure=True), nodes, seed=seed
        )
        assert counted.globals["result"] == _filtered(pooled, True).groupby("k").x.count().to_dict()
    assert later >= 2  # the seeded chains did put n2 after others
    # Declared groups reveal no node's keys and report exactly those keys.
    run = _run(GroupCountEstimator(by="g", groups=["z", "a", "q"], secure=True), nodes)
    assert run.globals["result"] == {"z": 15, "a": 30, "q": 0}
    assert all(s["plan"] == {"keys": ["z", "a", "q"]} for s in _chain(run))


def _views(run: Any) -> list[np.ndarray]:
    """What each observer sees, as fractions of the ring: each running total (the
    coordinator stores it; the next node, or the initiator, receives it) and each
    difference of consecutive totals (what the coordinator could compute)."""
    accs = [np.asarray(s["acc"], dtype=np.uint64) for s in _chain(run)]
    diffs = [b - a for a, b in itertools.pairwise(accs)]  # mod 2**64
    return [a.astype(np.float64) / RING for a in accs + diffs]


def test_every_intermediate_is_uniform_and_independent_of_a_nodes_data(tmp_path: Path) -> None:
    # Two fleets that differ only in node n0's data: 40 rows near 0 vs 3 rows of 1e6.
    parts = _parts()
    other = [pd.DataFrame({"x": [1e6, 2e6, 3e6], "g": ["a"] * 3, "k": [1, 1, 1]}), *parts[1:]]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a_nodes, _ = _fleet(tmp_path / "a", parts)
    b_nodes, _ = _fleet(tmp_path / "b", other)
    est = MeanEstimator(feature="x", secure=True)  # [count, sum]: the seed hides counts
    runs = 40
    seen: dict[str, list[list[np.ndarray]]] = {"a": [], "b": []}
    for name, nodes, data in (("a", a_nodes, parts), ("b", b_nodes, other)):
        for seed in range(runs):
            run = _run(est, nodes, seed=seed)
            pooled = pd.concat(data)
            assert run.globals["result"] == pytest.approx(pooled.x.mean(), rel=1e-9)
            seen[name].append(_views(run))
            # No stored total is the plain partial sum of the nodes so far.
            by_node = {f"n{i}": df for i, df in enumerate(data)}
            plain = np.zeros(2, dtype=np.uint64)
            for state in _chain(run):
                x = by_node[state["contributors"][-1]].x.dropna()
                plain = plain + encode_vector([len(x), float(x.sum())], 1, FRAC_BITS)
                assert not np.any(np.asarray(state["acc"], dtype=np.uint64) == plain)
    views = len(seen["a"][0])
    assert views == 5  # 3 running totals, 2 differences
    alpha = 1e-5  # 2 slots x 5 views x 3 tests: a false alarm once in ~3000 runs
    for v in range(views):
        for slot in range(2):
            a = np.array([s[v][slot] for s in seen["a"]])
            b = np.array([s[v][slot] for s in seen["b"]])
            assert stats.kstest(a, "uniform").pvalue > alpha, (v, slot, a)
            assert stats.kstest(b, "uniform").pvalue > alpha, (v, slot, b)
            assert stats.ks_2samp(a, b).pvalue > alpha, (v, slot)


def test_a_statistic_too_large_for_the_fixed_point_is_refused(tmp_path: Path) -> None:
    big = pd.DataFrame({"x": [1e6, 2e6, 3e6]})
    nodes, _ = _fleet(tmp_path, [big, big])
    run = _run(SumEstimator(feature="x", secure=True), nodes)  # 24 bits: up to 2**38
    assert run.globals["result"] == pytest.approx(12e6, abs=1e-6)
    with pytest.raises(shoal.SwarmFailedError) as info:  # 40 bits: |value| < 2**22
        _run(SumEstimator(feature="x", secure=True, frac_bits=40), nodes)
    text = str(info.value)
    assert "too large for the secure sum's fixed point" in text and "frac_bits" in text
