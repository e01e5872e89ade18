"""Secure aggregation's cost per round, by step, at 10 / 100 / 1000 clients.

Runs the pure protocol (shoal.privacy._secagg) in one process on the digits model's
size (651 values: 64x10 weights, 10 biases and the sample count) and prints, per client,
the seconds of each client step and the bytes it uploads, and the server's unmasking
time. At 1000 clients only one client's steps are timed and the server is not run (the
full round would take the whole machine for minutes: the full graph costs O(n) per
client and O(n^2) in all).

    python bench/secagg_overhead.py [--sizes 10 100 1000]
"""

from __future__ import annotations

import argparse
import secrets
import time

import numpy as np

from shoal.privacy import _secagg as sa

LABEL = "bench/0"
MODEL = 651


def one_round(n: int, full: bool) -> dict[str, float]:
    t = -(-2 * n // 3)
    keys = {u: sa.ClientKeys.derive(secrets.token_bytes(32), LABEL) for u in range(1, n + 1)}
    publics = {u: k.public() for u, k in keys.items()}
    clients = list(keys) if full else [1]
    x = np.random.default_rng(0).normal(size=MODEL)
    out: dict[str, float] = {}

    start = time.perf_counter()
    sent = {u: sa.share(u, keys[u], publics, t, LABEL) for u in clients}
    out["share_s"] = (time.perf_counter() - start) / len(clients)
    out["share_bytes"] = sum(len(b) for b in sent[1].values())

    start = time.perf_counter()
    masked = {u: sa.mask(u, keys[u], x, publics, LABEL) for u in clients}
    out["mask_s"] = (time.perf_counter() - start) / len(clients)
    out["mask_bytes"] = masked[1].nbytes
    if not full:
        return out

    survivors = set(masked)
    start = time.perf_counter()
    reveals = {
        w: sa.reveal(w, keys[w], publics, {u: sent[u][w] for u in sent}, survivors, LABEL)
        for w in clients
    }
    out["reveal_s"] = (time.perf_counter() - start) / n
    masked_sum = np.sum(list(masked.values()), axis=0, dtype=np.uint64)
    start = time.perf_counter()
    total = sa.unmask(masked_sum, survivors, publics, reveals, t, LABEL)
    out["server_s"] = time.perf_counter() - start
    assert np.allclose(total, n * x, atol=n * 2.0**-24)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000])
    args = parser.parse_args()
    print(
        "| clients | share (s/client) | mask (s/client) | reveal (s/client) | server unmask (s) "
        "| upload/client: shares + masked (kB) |"
    )
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        r = one_round(n, full=n <= 100)
        up = (r["share_bytes"] + r["mask_bytes"] + 2 * 32) / 1000
        print(
            f"| {n} | {r['share_s']:.4f} | {r['mask_s']:.4f} "
            f"| {r.get('reveal_s', float('nan')):.4f} "
            f"| {r.get('server_s', float('nan')):.3f} | {up:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
