"""Each filter alone, on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.digits import Digits, run_digits

from shoal import ShoalError
from shoal.privacy import DPNoise, ExcludeVars, PercentilePrivacy, Quantize
from shoal.strategies import FedAvg, flatten

UPDATE = {"W": np.array([[0.5, -0.02], [0.001, -0.3]]), "b": np.array([0.04, -0.0005])}


def test_exclude_vars_drops_or_zeroes_matching_keys() -> None:
    assert set(ExcludeVars(("b",))(UPDATE)) == {"W"}
    zeroed = ExcludeVars(("W|b",), zero=True)(UPDATE)
    assert set(zeroed) == {"W", "b"} and not zeroed["W"].any() and not zeroed["b"].any()
    assert set(ExcludeVars(("W.*",))({"W1": 1, "W2": 2, "c": 3})) == {"c"}


def test_percentile_privacy_keeps_the_largest_and_clips_them() -> None:
    # 6 magnitudes: 0.5, 0.02, 0.001, 0.3, 0.04, 0.0005; the 50th percentile is 0.03,
    # so 0.5, 0.3 and 0.04 are kept and clipped to gamma = 0.1.
    out = PercentilePrivacy(percentile=50, gamma=0.1)(UPDATE)
    np.testing.assert_allclose(out["W"], [[0.1, 0.0], [0.0, -0.1]])
    np.testing.assert_allclose(out["b"], [0.04, 0.0])
    with pytest.raises(ShoalError):
        PercentilePrivacy(percentile=120)


def test_quantize_error_is_at_most_half_a_step() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000)
    for bits in (8, 16):
        q = Quantize(bits)
        enc = q.encode({"x": x})
        assert enc["x"]["q"].dtype == (np.uint8 if bits == 8 else np.uint16)
        step = (x.max() - x.min()) / (2**bits - 1)
        error = np.max(np.abs(q({"x": x})["x"] - x))
        assert 0 < error <= step / 2 + 1e-12
    const = Quantize(8)(np.full(3, 2.5))
    np.testing.assert_allclose(const, 2.5)


def test_dp_noise_clips_the_whole_value_and_adds_calibrated_noise() -> None:
    big = {"a": np.full(400, 10.0), "b": np.full(100, -10.0)}  # norm 223.6
    f = DPNoise(clip=1.0, noise_multiplier=0.5, rng=np.random.default_rng(1))
    draws = np.concatenate([flatten(f(big))[0] for _ in range(200)])
    clipped = flatten(big)[0] / np.linalg.norm(flatten(big)[0])
    expected_mean = np.tile(clipped, 200)
    assert np.var(draws - expected_mean) == pytest.approx(0.25, rel=0.03)
    assert f.charge().noise_multiplier == 0.5


def test_a_worker_filter_keeps_an_excluded_variable_at_home(digits: Digits) -> None:
    run, acc = run_digits(FedAvg(), digits, nodes=4, rounds=2, exclude=["b"])
    assert not run.globals["weights"]["b"].any()  # the bias never left a node
    assert run.globals["weights"]["W"].any() and acc > 0.5
