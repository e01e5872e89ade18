"""Each strategy's server step against its paper's equations on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shoal.strategies import (
    Bulyan,
    ClientUpdate,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Krum,
    Median,
    MultiKrum,
    Scaffold,
    Strategy,
    TrimmedMean,
    flatten,
    proximal_gradient,
)

X0 = np.array([1.0, -2.0, 0.5])
DELTAS = [np.array([0.1, 0.2, -0.3]), np.array([-0.4, 0.0, 0.6]), np.array([0.3, 0.3, 0.3])]
COUNTS = [10.0, 30.0, 60.0]


def ups(deltas: list[np.ndarray] = DELTAS, counts: list[float] = COUNTS) -> list[ClientUpdate]:
    pairs = enumerate(zip(deltas, counts, strict=True))
    return [ClientUpdate(d, n, node_id=f"n{i}") for i, (d, n) in pairs]


def weighted() -> np.ndarray:
    return sum(n * d for d, n in zip(DELTAS, COUNTS, strict=False)) / sum(COUNTS)  # type: ignore[return-value]


def test_fedavg_is_the_sample_weighted_mean() -> None:
    x, state = FedAvg().aggregate(X0, iter(ups()))  # an iterator: read once, streamed
    # (10*0.1 + 30*-0.4 + 60*0.3) / 100 = 0.07, ...
    np.testing.assert_allclose(x - X0, [0.07, 0.2, 0.33])
    assert state == {}
    x, _ = FedAvg(weighted=False, lr=0.5).aggregate(X0, ups())
    np.testing.assert_allclose(x, X0 + 0.5 * np.mean(DELTAS, axis=0))


def test_fedprox_server_step_is_fedavg_and_its_client_term_is_mu_times_drift() -> None:
    assert np.allclose(FedProx(mu=0.1).aggregate(X0, ups())[0], FedAvg().aggregate(X0, ups())[0])
    assert FedProx(mu=0.1).client_config() == {"name": "fedprox", "mu": 0.1}
    g = proximal_gradient({"W": np.ones(2), "b": np.zeros(1)}, {"W": np.zeros(2), "b": [1.0]}, 0.5)
    np.testing.assert_allclose(g["W"], [0.5, 0.5])
    np.testing.assert_allclose(g["b"], [-0.5])


def test_fedavgm_accumulates_server_momentum() -> None:
    s = FedAvgM(lr=1.0, momentum=0.9)
    x1, st = s.aggregate(X0, ups())
    np.testing.assert_allclose(st["momentum"], weighted())
    x2, st2 = s.aggregate(x1, ups(), st)
    np.testing.assert_allclose(st2["momentum"], 0.9 * weighted() + weighted())
    np.testing.assert_allclose(x2, X0 + weighted() + 1.9 * weighted())


def _paper(kind: str, rounds: int, lr: float, b1: float, b2: float, tau: float) -> np.ndarray:
    """Reddi et al. 2021, Algorithm 2, written out coordinate by coordinate."""
    x = X0.copy()
    m = np.zeros(3)
    v = np.full(3, tau**2)
    for _ in range(rounds):
        d = weighted()
        m = b1 * m + (1 - b1) * d
        if kind == "adagrad":
            v = v + d**2
        elif kind == "yogi":
            v = v - (1 - b2) * d**2 * np.sign(v - d**2)
        else:
            v = b2 * v + (1 - b2) * d**2
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize(
    ("cls", "kind"), [(FedAdam, "adam"), (FedYogi, "yogi"), (FedAdagrad, "adagrad")]
)
def test_fedopt_follows_reddi_et_al_algorithm_2(cls: type[FedAdam], kind: str) -> None:
    s = cls(lr=0.05, beta1=0.8, beta2=0.95, tau=1e-2)
    x, state = X0, {}
    for _ in range(3):
        x, state = s.aggregate(x, ups(), state)
    np.testing.assert_allclose(x, _paper(kind, 3, 0.05, 0.8, 0.95, 1e-2), rtol=1e-12)


def test_fedadam_first_step_by_hand() -> None:
    # One coordinate: Delta = 0.2, beta1 = 0.9, beta2 = 0.99, tau = 0.1, eta = 1:
    # m = 0.02, v = 0.99 * 0.01 + 0.01 * 0.04 = 0.0103, x = 0.02 / (sqrt(0.0103) + 0.1).
    x, st = FedAdam(lr=1.0, beta1=0.9, beta2=0.99, tau=0.1).aggregate(
        np.zeros(1), [ClientUpdate(np.array([0.2]))]
    )
    assert st["m"][0] == pytest.approx(0.02)
    assert st["v"][0] == pytest.approx(0.0103)
    assert x[0] == pytest.approx(0.02 / (np.sqrt(0.0103) + 0.1))


def test_scaffold_moves_model_and_server_control_by_unweighted_means() -> None:
    controls = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0]), np.array([0, 0, 3.0])]
    updates = [ClientUpdate(d, n, c) for d, n, c in zip(DELTAS, COUNTS, controls, strict=False)]
    c0 = np.array([0.5, 0.5, 0.5])
    x, st = Scaffold(lr=0.5, total_clients=6).aggregate(X0, updates, {"c": c0})
    np.testing.assert_allclose(x, X0 + 0.5 * np.mean(DELTAS, axis=0))
    np.testing.assert_allclose(st["c"], c0 + (3 / 6) * np.mean(controls, axis=0))
    with pytest.raises(ValueError, match="control variates"):
        Scaffold().aggregate(X0, ups())


def test_median_and_trimmed_mean_match_numpy_and_scipy() -> None:
    rng = np.random.default_rng(0)
    deltas = list(rng.normal(size=(9, 5)))
    x, _ = Median().aggregate(X0[:1].repeat(5), ups(deltas, [1.0] * 9))
    np.testing.assert_allclose(x - X0[0], np.median(deltas, axis=0))
    x, _ = TrimmedMean(trim=0.25).aggregate(np.zeros(5), ups(deltas, [1.0] * 9))
    np.testing.assert_allclose(x, stats.trim_mean(np.array(deltas), 0.25, axis=0))


def _planted(n_good: int, n_bad: int, seed: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    centre = np.array([1.0, -1.0, 2.0, 0.0])
    # Honest updates around the centre, symmetric so that the centre is their medoid.
    axes = [s * 0.01 * np.eye(4)[k % 4] for k in range(n_good - 1) for s in (1, -1)]
    good = [centre.copy()] + [centre + a for a in axes[: n_good - 1]]
    bad = [100.0 * rng.normal(size=4) for _ in range(n_bad)]
    return centre, good + bad


def test_krum_picks_the_known_good_update_among_planted_byzantine_ones() -> None:
    # One honest update sits at the centre of the honest cluster: Krum must pick it.
    centre, deltas = _planted(6, 2)
    deltas = [*deltas[1:4], deltas[0], *deltas[4:]]  # the honest centre is update 3
    x, _ = Krum(byzantine=2).aggregate(np.zeros(4), ups(deltas, [1.0] * 8))
    np.testing.assert_array_equal(x, centre)
    # Multi-Krum averages only honest ones; a plain mean is dragged far away.
    x, _ = MultiKrum(byzantine=2, select=4).aggregate(np.zeros(4), ups(deltas, [1.0] * 8))
    assert np.linalg.norm(x - centre) < 0.05
    mean, _ = FedAvg(weighted=False).aggregate(np.zeros(4), ups(deltas, [1.0] * 8))
    assert np.linalg.norm(mean - centre) > 5


def test_krum_scores_by_hand() -> None:
    # n=5, f=1: each score sums the n - f - 2 = 2 smallest squared distances.
    pts = np.array([[0.0], [1.0], [2.0], [10.0], [3.0]])
    from shoal.strategies._robust import krum_scores

    np.testing.assert_allclose(krum_scores(pts, 1), [1 + 4, 1 + 1, 1 + 1, 49 + 64, 1 + 4])


def test_bulyan_resists_planted_byzantine_updates_and_checks_its_bound() -> None:
    centre, deltas = _planted(9, 2)
    x, _ = Bulyan(byzantine=2).aggregate(np.zeros(4), ups(deltas, [1.0] * 11))
    assert np.linalg.norm(x - centre) < 0.05
    with pytest.raises(ValueError, match="4f \\+ 3"):
        Bulyan(byzantine=2).aggregate(np.zeros(4), ups(deltas[:10], [1.0] * 10))
    with pytest.raises(ValueError, match="2f \\+ 2"):
        Krum(byzantine=2).aggregate(np.zeros(4), ups(deltas[:6], [1.0] * 6))


def test_streaming_flags_say_which_rules_hold_every_update() -> None:
    streaming = {c.name for c in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, Scaffold)}
    holding = {c.name for c in (Median, TrimmedMean, Krum, MultiKrum, Bulyan)}
    for name in streaming | holding:
        assert Strategy.from_config({"name": name}).streaming == (name in streaming)


def test_config_round_trips_and_models_flatten_back() -> None:
    s = FedYogi(lr=0.3, tau=0.01)
    assert Strategy.from_config(s.config()) == s
    model = {"W": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2], dtype=np.int32)}
    vec, layout = flatten(model)
    back = layout.unflatten(vec)
    assert back["W"].shape == (2, 3) and back["b"].dtype == np.int32
    np.testing.assert_array_equal(vec, [0, 1, 2, 3, 4, 5, 1, 2])


def test_bulyan_by_hand() -> None:
    # n=7, f=1: theta = 5 updates chosen by iterated Krum (the two outliers never are),
    # then per coordinate the beta = 3 values nearest the median are averaged.
    from shoal.strategies._robust import bulyan

    pts = np.array(
        [[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.3, 0.0], [1.0, 0.9], [50, 50], [-50, -50]]
    )
    np.testing.assert_allclose(bulyan(pts, 1), [0.2, 0.0])
