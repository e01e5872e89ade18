"""Estimators with ``privacy=DP(...)``: local DP, each node spending its own budget.

The noise each node adds is calibrated by shoal.privacy's Laplace and Gaussian
mechanisms to the estimator's sensitivity under the declared bounds; what a release
costs is accounted by dp-accounting (through the node's ledger); a node refuses a
release past its dataset's budget and the user sees why (issue 19, point 3).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pandas as pd
import pytest
from dp_accounting import pld
from scipy import stats

import shoal
from shoal import NodeProfile
from shoal._privacy.accounting import DISCRETIZATION
from shoal._privacy.ledger import Budget, Ledger
from shoal.privacy import Gaussian, Laplace, epsilon
from shoal.steps import (
    DP,
    Artifact,
    Collect,
    CountEstimator,
    Estimate,
    Estimator,
    Finalize,
    GroupCountEstimator,
    GroupMeanEstimator,
    HistogramEstimator,
    MeanEstimator,
    Parallel,
    SumEstimator,
    VarianceEstimator,
)
from shoal.steps import Aggregate as AggregateOp

pytestmark = pytest.mark.timeout(120)

EDGES = [float(e) for e in range(-25, 26)]  # 50 bins of width 1: 50 noise draws per release
DELTA = 1e-5


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[NodeProfile], pd.DataFrame]:
    root = Path(tmp_path_factory.mktemp("dp_fleet"))
    rng = np.random.default_rng(3)
    nodes, parts = [], []
    for i, n in enumerate([60, 30, 45]):
        df = pd.DataFrame({"x": rng.normal(0, 8, n), "g": rng.choice(["a", "b"], n)})
        df.to_csv(root / f"part{i}.csv", index=False)
        parts.append(pd.read_csv(root / f"part{i}.csv"))
        nodes.append(NodeProfile(name=f"n{i}", datasets={"t": root / f"part{i}.csv"}))
    return nodes, pd.concat(parts)


def _laplace(eps: float) -> DP:
    return DP(epsilon=eps, lower=-10, upper=10)


def _gauss(eps: float) -> DP:
    return DP(mechanism="gaussian", epsilon=eps, delta=DELTA, lower=-10, upper=10)


def _exact(pooled: pd.DataFrame) -> dict[str, list[float]]:
    """Each estimator's exact statistics vector, from pandas (values clipped to +-10)."""
    x, g = pooled.x, pooled.g
    c = x.clip(-10, 10)
    return {
        "CountEstimator": [len(pooled)],
        "SumEstimator": [c.sum()],
        "MeanEstimator": [c.count(), c.sum()],
        "VarianceEstimator": [c.count(), c.sum(), (c * c).sum()],
        "HistogramEstimator": list(np.histogram(x, bins=EDGES)[0]),
        "GroupCountEstimator": [int((g == k).sum()) for k in ("a", "b")],
        "GroupMeanEstimator": [int((g == k).sum()) for k in ("a", "b")]
        + [c[g == k].sum() for k in ("a", "b")],
    }


# (estimator, its sensitivities (L1, L2) derived here by hand: one record in [-10, 10]
# adds 1 to a count and at most 10 to a sum, 100 to a sum of squares, 1 to one bin).
ESTIMATORS: list[tuple[Any, tuple[float, float]]] = [
    (lambda p: CountEstimator(privacy=p), (1.0, 1.0)),
    (lambda p: SumEstimator(feature="x", privacy=p), (10.0, 10.0)),
    (lambda p: MeanEstimator(feature="x", privacy=p), (11.0, math.sqrt(101))),
    (lambda p: VarianceEstimator(feature="x", privacy=p), (111.0, math.sqrt(10101))),
    (lambda p: HistogramEstimator(feature="x", edges=EDGES, privacy=p), (1.0, 1.0)),
    (lambda p: GroupCountEstimator(by="g", groups=["a", "b"], privacy=p), (1.0, 1.0)),
    (
        lambda p: GroupMeanEstimator(by="g", feature="x", groups=["a", "b"], privacy=p),
        (11.0, math.sqrt(101)),
    ),
]


def _calibrated(spec: DP, l1: float, l2: float) -> Any:
    """The noise distribution the spec promises (scipy), computed without shoal."""
    if spec.mechanism == "laplace":
        return stats.laplace(scale=l1 / spec.epsilon)
    assert spec.delta is not None
    sigma = float(dp_accounting.get_sigma_gaussian(spec.epsilon, spec.delta)) * l2
    return stats.norm(scale=sigma)


@pytest.mark.parametrize("mechanism", [_laplace, _gauss], ids=["laplace", "gaussian"])
def test_each_mechanism_draws_the_calibrated_noise(mechanism: Any) -> None:
    # The mechanism function itself, 200,000 draws: the variance within 1.5 % (5 sd of
    # the estimate for Laplace's kurtosis) and the shape by a KS test.
    spec = mechanism(0.7)
    for l1, l2 in [(1.0, 1.0), (11.0, math.sqrt(101))]:
        mech = spec.mechanism_for(l1, l2)
        assert isinstance(mech, Laplace if spec.mechanism == "laplace" else Gaussian)
        want = _calibrated(spec, l1, l2)
        draws = mech.noise(200_000)
        assert draws.var() / want.var() == pytest.approx(1.0, abs=0.015)
        assert abs(draws.mean()) < 5 * want.std() / math.sqrt(draws.size)
        assert stats.kstest(draws, want.cdf).pvalue > 1e-4


@pytest.mark.parametrize("mechanism", [_laplace, _gauss], ids=["laplace", "gaussian"])
@pytest.mark.parametrize("index", range(len(ESTIMATORS)), ids=lambda i: str(i))
def test_each_estimator_releases_its_statistics_plus_the_calibrated_noise(
    fleet: Any, mechanism: Any, index: int
) -> None:
    # Many releases of one estimator on the pooled table: the noise on every entry is
    # centred and has the variance of the mechanism calibrated to the sensitivity
    # derived by hand above (a wrong sensitivity shows as a wrong variance).
    _, pooled = fleet
    make, (l1, l2) = ESTIMATORS[index]
    est: Estimator = make(mechanism(2.0))
    assert est.privacy is not None
    exact = np.asarray(_exact(pooled)[type(est).__name__], dtype=float)
    ledger = Ledger({})  # the node's ledger, for a dataset without a budget: no limit
    spend = functools.partial(ledger.spend, "t")
    plan, df = est.plan([]), est.frame(pooled)
    want = _calibrated(est.privacy, l1, l2)
    # The mechanism the estimator picks is calibrated exactly as derived by hand ...
    mech = est.privacy.mechanism_for(*est.sensitivity())
    assert (mech.scale * math.sqrt(2) if isinstance(mech, Laplace) else mech.std) == (
        pytest.approx(want.std(), rel=1e-12)
    )
    # ... and its noise is what lands on the released statistics (a release is a few
    # pandas calls: 1,000 releases, 3,000 noise draws at least).
    draws = max(3_000 // exact.size, 1_000)
    noise = np.array([est.release(df, plan, spend) for _ in range(draws)]) - exact
    z = noise.reshape(-1) / want.std()
    # sd of the sample variance: sqrt((kurtosis - 1) / n); Laplace's kurtosis is 6.
    kurtosis = 6 if est.privacy.mechanism == "laplace" else 3
    tolerance = 5 * math.sqrt((kurtosis - 1) / z.size)
    assert z.var() == pytest.approx(1.0, abs=tolerance), (type(est).__name__, z.var())
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert stats.kstest(z, lambda v: want.cdf(v * want.std())).pvalue > 1e-4


def test_a_release_spends_the_mechanisms_charge_and_the_ledger_equals_dp_accounting(
    fleet: Any,
) -> None:
    # Through the node's own ledger (as a node keeps it): k releases of a Laplace count
    # and of a Gaussian mean spend what dp-accounting says their composition costs.
    _, pooled = fleet
    ledger = Ledger({"t": Budget(epsilon=100.0, delta=DELTA)})
    spend = functools.partial(ledger.spend, "t")
    count = CountEstimator(privacy=DP(epsilon=0.5))
    mean = MeanEstimator(feature="x", privacy=_gauss(1.0))
    for _ in range(3):
        count.release(pooled, {}, spend)
    assert ledger.spent("t") == pytest.approx(1.5, abs=2e-3)  # pure DP adds up
    for _ in range(4):
        mean.release(pooled, {}, spend)
    charges = ledger.charges("t")
    assert [c.label for c in charges] == ["steps CountEstimator"] * 3 + ["steps MeanEstimator"] * 4
    assert charges[0] == Laplace(epsilon=0.5).charge(label="steps CountEstimator")
    sigma = float(dp_accounting.get_sigma_gaussian(1.0, DELTA))
    assert charges[-1].kind == "gaussian"
    assert charges[-1].noise_multiplier == pytest.approx(sigma, rel=1e-12)
    library = pld.PLDAccountant(value_discretization_interval=DISCRETIZATION)
    library.compose(
        dp_accounting.ComposedDpEvent(
            [
                dp_accounting.SelfComposedDpEvent(dp_accounting.LaplaceDpEvent(2.0), 3),
                dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), 4),
            ]
        )
    )
    assert ledger.spent("t") == pytest.approx(float(library.get_epsilon(DELTA)), rel=1e-9)
    assert epsilon(charges, DELTA) == ledger.spent("t")


def _noise_of_runs(est: Any, nodes: list[NodeProfile], pooled: pd.DataFrame, runs: int) -> Any:
    exact = np.histogram(pooled.x, bins=EDGES)[0]
    noise = []
    for seed in range(runs):
        run = shoal.simulate(
            est.artifact(dataset="t", initiator="n0"), nodes=nodes, executor="inline", seed=seed
        )
        noise.append(np.asarray(run.globals["result"]["counts"], dtype=float) - exact)
    return np.concatenate(noise)


@pytest.mark.parametrize("secure", [False, True])
def test_released_results_carry_the_calibrated_noise_of_every_node(fleet, secure: bool) -> None:  # type: ignore[no-untyped-def]
    # End to end in the simulator. Local DP: each of 3 nodes adds Laplace(1/eps) to each
    # bin; the result's noise variance is 3 * 2 / eps**2, whether the noised vectors are
    # summed in the clear or by the secure sum (fixed point: 2**-24 of rounding per node).
    nodes, pooled = fleet
    eps = 0.8
    est = HistogramEstimator(feature="x", edges=EDGES, privacy=DP(epsilon=eps), secure=secure)
    noise = _noise_of_runs(est, nodes, pooled, runs=16)  # 800 draws
    want = 3 * 2 / eps**2
    assert abs(noise.mean()) < 4 * math.sqrt(want / noise.size)
    # sd of the sample variance of a sum of 3 Laplace: kurtosis 3 + 3/3 = 4 -> sqrt(3/800)
    assert noise.var() / want == pytest.approx(1.0, abs=5 * math.sqrt(3 / noise.size))
    assert not np.allclose(noise, np.round(noise))  # not exact counts


def test_private_group_means_need_declared_groups_and_report_them(fleet) -> None:  # type: ignore[no-untyped-def]
    nodes, pooled = fleet
    with pytest.raises(shoal.ShoalError, match="under DP the keys must be declared"):
        GroupMeanEstimator(by="g", feature="x", privacy=DP(epsilon=1.0, lower=-3, upper=3))
    with pytest.raises(shoal.ShoalError, match="needs the feature's declared bounds"):
        MeanEstimator(feature="x", privacy=DP(epsilon=1.0))
    est = GroupMeanEstimator(
        by="g",
        feature="x",
        groups=["a", "b", "none"],
        privacy=DP(epsilon=50.0, lower=-30, upper=30),
        secure=True,
    )
    run = shoal.simulate(est.artifact(dataset="t"), nodes=nodes, executor="inline")
    got = run.globals["result"]
    assert list(got) == ["a", "b", "none"]
    for key in ("a", "b"):  # eps 50: noise std ~ 31/50 per node on sums of ~60 rows
        assert got[key] == pytest.approx(pooled[pooled.g == key].x.mean(), abs=0.5)
    var = VarianceEstimator(feature="x", privacy=DP(epsilon=100.0, lower=-30, upper=30))
    value = shoal.simulate(var.artifact(dataset="t"), nodes=nodes, executor="inline")
    assert value.globals["result"] == pytest.approx(pooled.x.clip(-30, 30).var(), rel=0.5)


@pytest.mark.parametrize("secure", [False, True])
def test_a_release_past_a_nodes_budget_is_refused_with_spent_and_remaining(
    fleet, secure: bool
) -> None:  # type: ignore[no-untyped-def]
    nodes, _ = fleet
    budget = {"t": {"epsilon": 1.5, "delta": DELTA}}
    first = CountEstimator(privacy=DP(epsilon=1.0))
    second = CountEstimator(privacy=DP(epsilon=1.0), secure=secure)
    # One run, two releases: the first fits the budget, the second does not.
    tail = second.artifact(dataset="t", initiator="n0").steps
    steps = [Parallel(operation=Estimate(estimator=first)), *tail]
    artifact = Artifact(steps=steps, dataset="t", initiator="n0", name="twice")
    run = shoal.simulate(
        artifact, nodes=nodes, executor="inline", privacy=budget, raise_on_failure=False
    )
    assert run.status == "failed"
    failure = run.failures[0]
    text = failure.error
    assert f"node {failure.node_id!r} refuses to spend privacy budget on dataset 't'" in text
    assert "steps CountEstimator" in text and "over the budget of 1.5" in text
    assert "spent 1, remaining 0.5" in text, text
    # The first release alone is within budget.
    alone = Artifact(
        steps=[
            Parallel(operation=Estimate(estimator=first), distribution=Collect()),
            Finalize(operation=AggregateOp(estimator=first)),
        ],
        dataset="t",
    )
    ok = shoal.simulate(alone, nodes=nodes, executor="inline", privacy=budget)
    assert ok.globals["result"] == pytest.approx(135, abs=40)


DIALECTS = ["_steps", "steps", "_job", "job", "strategies"]
# Laplace and Gaussian noise, a Gaussian's calibration, clipping
DRAWS = ("laplace", "normal", "get_sigma_gaussian", "norm")


def test_the_dialects_use_shoal_privacys_code_not_copies() -> None:
    # DP: an estimator's mechanism is shoal.privacy's class (the one Swarm code calls).
    assert type(DP(epsilon=1.0).mechanism_for(1.0, 1.0)) is Laplace
    assert type(_gauss(1.0).mechanism_for(1.0, 1.0)) is Gaussian
    # Secure sum: the chain adds pairwise_mask(), the very masks secure FedAvg's mask()
    # adds on top of the encoding and the self mask; over all parties they cancel.
    from shoal.privacy._secagg import ClientKeys, encode, mask, pairwise_mask, prg

    keys = {i: ClientKeys.derive(bytes([i + 1]) * 32, "round") for i in range(4)}
    publics = {i: k.public() for i, k in keys.items()}
    x = np.array([1.5, -2.0, 7.0])
    masked = mask(1, keys[1], x, publics, "label")
    parts = encode(x) + prg(keys[1].self_seed, 3) + pairwise_mask(1, keys[1], publics, "label", 3)
    assert np.array_equal(masked, parts)
    masks = [pairwise_mask(i, keys[i], publics, "label", 3) for i in keys]
    total = sum(masks, np.zeros(3, np.uint64))
    assert not total.any()
    # Secure FedAvg in the job dialect: FedAvg(secure=...) compiles to the tasks of
    # shoal.strategies.SecureFedAvg (tests/job/test_secure_job.py compares them byte for
    # byte); the job's code names that class and never the maths below it.
    import ast

    src = Path(shoal.__file__).parent
    imports = {
        (str(path.relative_to(src)), node.module, a.name)
        for package in ("_job", "job")
        for path in sorted((src / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
        for a in node.names
    }
    assert ("job/_run.py", "shoal.strategies", "SecureFedAvg") in imports
    assert not [i for i in imports if "_secagg" in f"{i[1]}.{i[2]}"], imports
    # No dialect module does the maths itself: no key agreement or ciphers, no accountant,
    # no noise draws or clipping outside shoal.privacy.
    import ast

    root = Path(shoal.__file__).parent
    offenders = []
    for package in DIALECTS:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                bad = [n for n in names if n.split(".")[0] in ("cryptography", "dp_accounting")]
                if isinstance(node, ast.Attribute) and node.attr in DRAWS:
                    bad.append(node.attr)
                offenders += [f"{path.relative_to(root)}:{node.lineno}: {b}" for b in bad]  # type: ignore[attr-defined]
    assert not offenders, offenders
