"""Noise is calibrated as declared: empirical variances over many draws."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest

from shoal import ShoalError
from shoal.privacy import Gaussian, Laplace, bounded_count, bounded_sum, clip_by_norm
from shoal.strategies import ClientUpdate, DPFedAvg
from shoal.strategies._dp import adaptive_clip, sum_noise_multiplier

DRAWS = 200_000


def test_laplace_variance_is_two_b_squared() -> None:
    mech = Laplace(epsilon=0.5, sensitivity=2.0)  # b = 4
    draws = mech.noise(DRAWS, np.random.default_rng(1))
    assert mech.scale == 4.0
    assert np.var(draws) == pytest.approx(2 * 4.0**2, rel=0.03)
    assert np.mean(draws) == pytest.approx(0.0, abs=0.05)


def test_gaussian_is_calibrated_by_the_library_and_has_that_variance() -> None:
    mech = Gaussian(sensitivity=3.0, epsilon=1.0, delta=1e-5)
    assert mech.std == pytest.approx(3.0 * dp_accounting.get_sigma_gaussian(1.0, 1e-5))
    draws = mech.noise(DRAWS, np.random.default_rng(2))
    assert np.var(draws) == pytest.approx(mech.std**2, rel=0.02)
    assert Gaussian(sigma=2.0, sensitivity=4.0).noise_multiplier == 0.5


def test_bounded_queries_clip_to_their_declared_bounds() -> None:
    rng = np.random.default_rng(3)
    values = np.array([-5.0, 0.5, 2.0, 100.0])  # clipped to [0, 1]: 0 + 0.5 + 1 + 1
    sums = [bounded_sum(values, 0.0, 1.0, Laplace(1.0, 1.0), rng) for _ in range(20_000)]
    assert np.mean(sums) == pytest.approx(2.5, abs=0.05)
    assert np.var(sums) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ShoalError, match="sensitivity 10") as err:
        bounded_sum(values, -10.0, 1.0, Laplace(1.0, 1.0))
    assert err.value.code == "privacy.mechanism"
    counts = [bounded_count(7, Gaussian(sigma=1.0), rng) for _ in range(20_000)]
    assert np.var(counts) == pytest.approx(1.0, rel=0.05)


def test_clip_by_norm() -> None:
    v, ok = clip_by_norm([3.0, 4.0], 1.0)
    np.testing.assert_allclose(v, [0.6, 0.8])
    assert not ok
    v, ok = clip_by_norm([0.3, 0.4], 1.0)
    assert ok and np.allclose(v, [0.3, 0.4])


def test_central_dp_fedavg_noise_on_the_mean_has_std_z_clip_over_n() -> None:
    # 4 clients, two beyond the clip norm: the mean of the clipped updates, plus noise
    # of std z * C / n on every coordinate.
    deltas = [np.array([3.0, 4.0]), np.array([0.3, 0.0]), np.array([0.0, -0.5]), np.array([0, 9.0])]
    clipped = [np.array([0.6, 0.8]), np.array([0.3, 0]), np.array([0, -0.5]), np.array([0, 1.0])]
    expected = np.sum(clipped, axis=0) / 4
    s = DPFedAvg(clip=1.0, noise_multiplier=0.8, seed=5)
    outs = []
    state: dict[str, np.ndarray] = {}
    for _ in range(8_000):
        x, state = s.aggregate(np.zeros(2), [ClientUpdate(d) for d in deltas], state)
        outs.append(x)
    outs_a = np.array(outs)
    np.testing.assert_allclose(outs_a.mean(axis=0), expected, atol=0.005)
    np.testing.assert_allclose(outs_a.var(axis=0), (0.8 * 1.0 / 4) ** 2, rtol=0.06)


def test_local_dp_fedavg_takes_the_plain_mean_of_noisy_updates() -> None:
    s = DPFedAvg(clip=1.0, noise_multiplier=0.8, mode="local")
    updates = [ClientUpdate(np.array([0.2, 0.4]), within_clip=True) for _ in range(3)]
    x, state = s.aggregate(np.zeros(2), updates)
    np.testing.assert_allclose(x, [0.2, 0.4])  # no noise added again at the server
    assert state["clip"][0] == 1.0


def test_adaptive_clipping_follows_andrew_et_al() -> None:
    assert adaptive_clip(2.0, 0.75, 0.5, 0.2) == pytest.approx(2.0 * np.exp(-0.05))
    assert sum_noise_multiplier(1.0, 1.0) == pytest.approx((1 - 0.25) ** -0.5)
    with pytest.raises(ShoalError, match=r"clip_count_stddev > 0\.5"):
        sum_noise_multiplier(1.0, 0.4)
    # 1 of 4 norms within C = 1, target 0.25: C stays; target 0.75: it grows.
    norms = [0.5, 2.0, 3.0, 4.0]
    ups = [ClientUpdate(np.array([n, 0.0])) for n in norms]
    for target, factor in ((0.25, 1.0), (0.75, np.exp(0.2 * 0.5))):
        s = DPFedAvg(
            clip=1.0,
            noise_multiplier=1e-3,
            adaptive=True,
            target_quantile=target,
            clip_lr=0.2,
            clip_count_stddev=1e-2,
            seed=0,
        )
        _, state = s.aggregate(np.zeros(2), ups)
        assert state["clip"][0] == pytest.approx(factor, rel=0.002)
