"""Secure aggregation: exact sums, dropouts recovered, masked inputs look uniform."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from scipy import stats

from shoal.privacy import _secagg as sa
from shoal.privacy import _shamir

LABEL = "swarm-1/0"


def _round(
    inputs: dict[int, np.ndarray], threshold: int, drop_after_sharing: set[int] = frozenset()
) -> np.ndarray:
    keys = {u: sa.ClientKeys.derive(secrets.token_bytes(32), LABEL) for u in inputs}
    publics = {u: k.public() for u, k in keys.items()}  # U1 = U2 here
    sent = {u: sa.share(u, keys[u], publics, threshold, LABEL) for u in inputs}
    masked = {
        u: sa.mask(u, keys[u], x, publics, LABEL)
        for u, x in inputs.items()
        if u not in drop_after_sharing
    }
    survivors = set(masked)
    reveals = {
        w: sa.reveal(w, keys[w], publics, {u: sent[u][w] for u in sent}, survivors, LABEL)
        for w in survivors
    }
    masked_sum = np.sum(list(masked.values()), axis=0, dtype=np.uint64)  # wraps mod 2**64
    return sa.unmask(masked_sum, survivors, publics, reveals, threshold, LABEL)


def test_the_sum_is_exact_to_the_fixed_point_precision() -> None:
    rng = np.random.default_rng(0)
    inputs = {u: rng.normal(0, 100, size=50) for u in range(1, 8)}
    total = _round(inputs, threshold=4)
    exact = np.sum(list(inputs.values()), axis=0)
    # Each input is rounded to 2**-24: the sum is within n * 2**-25.
    assert np.max(np.abs(total - exact)) <= 7 * 2.0**-25
    assert np.max(np.abs(total - exact)) > 0  # it is fixed point, not the float sum


def test_t_dropped_clients_after_masking_keys_are_still_recovered() -> None:
    rng = np.random.default_rng(1)
    inputs = {u: rng.uniform(-1, 1, size=20) for u in range(1, 11)}
    dropped = {2, 5, 9}  # n = 10, threshold 7: up to 3 may drop
    total = _round(inputs, threshold=7, drop_after_sharing=dropped)
    exact = np.sum([x for u, x in inputs.items() if u not in dropped], axis=0)
    np.testing.assert_allclose(total, exact, atol=10 * 2.0**-25)
    with pytest.raises(ValueError, match="at least 7 are needed"):
        _round(inputs, threshold=7, drop_after_sharing={1, 2, 3, 4})


def test_a_masked_input_is_statistically_independent_of_the_clients_value() -> None:
    # The server's view of client 1's masked input, for an input of zeros and for one of
    # large values: both uniform on Z_2**64, and indistinguishable from each other.
    def view(x: np.ndarray) -> np.ndarray:
        keys = {u: sa.ClientKeys.derive(secrets.token_bytes(32), LABEL) for u in (1, 2, 3)}
        publics = {u: k.public() for u, k in keys.items()}
        return sa.mask(1, keys[1], x, publics, LABEL)

    zeros = np.concatenate([view(np.zeros(500)) for _ in range(20)])
    large = np.concatenate([view(np.full(500, 1e6)) for _ in range(20)])
    for sample in (zeros, large):
        assert stats.kstest(sample / 2.0**64, "uniform").pvalue > 0.001
    assert stats.ks_2samp(zeros / 2.0**64, large / 2.0**64).pvalue > 0.001
    # Without the mask the two are trivially apart.
    assert not np.array_equal(sa.encode(np.zeros(3)), sa.encode(np.full(3, 1e6)))


def test_shamir_threshold() -> None:
    secret = secrets.token_bytes(32)
    shares = _shamir.split(secret, [1, 2, 3, 4, 5], 3)
    assert _shamir.combine({i: shares[i] for i in (2, 4, 5)}, 3) == secret
    with pytest.raises(ValueError, match="do not reconstruct"):  # too few, told t = 2
        _shamir.combine({i: shares[i] for i in (1, 2)}, 2)
    with pytest.raises(ValueError):
        _shamir.combine({1: shares[1], 2: shares[2]}, 3)


def test_fixed_point_round_trips_negative_values() -> None:
    x = np.array([-1.5, 0.0, 2.25, -123456.789])
    np.testing.assert_allclose(sa.decode(sa.encode(x)), x, atol=2.0**-25)
