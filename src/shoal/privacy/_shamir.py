"""Shamir secret sharing of 32-byte secrets over GF(2**521 - 1)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

#: A Mersenne prime larger than any 32-byte secret.
PRIME = 2**521 - 1


def split(secret: bytes, ids: list[int], threshold: int) -> dict[int, int]:
    """Shares of ``secret`` for the (non-zero, distinct) ``ids``; any ``threshold`` of
    them give it back, fewer reveal nothing about it."""
    if not 1 <= threshold <= len(ids):
        raise ValueError(f"threshold {threshold} must be between 1 and {len(ids)}")
    if len(set(ids)) != len(ids) or any(not 0 < i < PRIME for i in ids):
        raise ValueError("share ids must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    out = {}
    for i in ids:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * i + c) % PRIME
        out[i] = y
    return out


def lagrange_at_zero(xs: tuple[int, ...]) -> dict[int, int]:
    """The Lagrange coefficients at 0 of the points ``xs``: computed once, they recover
    every secret shared among the same holders in O(t) each.

    ``c_j = prod_{m != j} x_m / (x_m - x_j)``; the t denominators are inverted together
    (Montgomery's trick: one modular inversion, not t).
    """
    nums, dens = [], []
    for xj in xs:
        num, den = 1, 1
        for xm in xs:
            if xm != xj:
                num = num * xm % PRIME
                den = den * (xm - xj) % PRIME
        nums.append(num)
        dens.append(den)
    prefix = [1]
    for d in dens:
        prefix.append(prefix[-1] * d % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)  # of the product of every denominator
    out = {}
    for j in range(len(xs) - 1, -1, -1):
        out[xs[j]] = nums[j] * inverse * prefix[j] % PRIME  # 1 / dens[j] = inverse * prefix[j]
        inverse = inverse * dens[j] % PRIME
    return out


def combine(
    shares: Mapping[int, int],
    threshold: int,
    size: int = 32,
    coefficients: Mapping[int, int] | None = None,
) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0);
    ``coefficients``: :func:`lagrange_at_zero` of the holders used, if known."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a secret of threshold {threshold}")
    xs = tuple(sorted(shares))[:threshold]
    if coefficients is None or any(x not in coefficients for x in xs):
        coefficients = lagrange_at_zero(xs)
    secret = sum(shares[x] * coefficients[x] for x in xs) % PRIME
    if secret >= 1 << (8 * size):
        raise ValueError("these shares do not reconstruct a secret (wrong or too few shares)")
    return secret.to_bytes(size, "big")
