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


def combine(shares: Mapping[int, int], threshold: int, size: int = 32) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a secret of threshold {threshold}")
    points = list(shares.items())[:threshold]
    secret = 0
    for j, (xj, yj) in enumerate(points):
        num, den = 1, 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num = num * (-xm) % PRIME
                den = den * (xj - xm) % PRIME
        secret = (secret + yj * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * size):
        raise ValueError("these shares do not reconstruct a secret (wrong or too few shares)")
    return secret.to_bytes(size, "big")
