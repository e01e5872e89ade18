"""Secure aggregation's cost per round, at 10 / 100 / 1000 clients.

Two measurements:

``--steps`` (the default): the pure protocol (shoal.privacy._secagg) in one process on
the digits model's size (651 values: 64x10 weights, 10 biases and the sample count),
every client of a whole round, unmasking checked against the true sum. Prints, per
client, the seconds of each client step and the bytes it uploads, and the server's
unmasking time. ``--graph default`` is SecAgg+'s sparse graph (the default degree of
``default_degree``); ``--graph full`` the complete graph (Bonawitz et al.): at 1000
clients only client 1's share and mask steps are timed there (the whole round is 1000
Shamir splits of degree 667, minutes on a 2-core machine).

``--sim``: whole simulated rounds (``shoal.simulate``, inline executor) of secure FedAvg
(SecAgg+, default graph) and of plain FedAvg, softmax regression on the digits, iid
split; seconds per round are ``(wall(R=3) - wall(R=1)) / 2`` so start-up cancels, and
each client task's mean instance time comes from the run's timings.

    python bench/secagg_overhead.py [--graph default|full] [--sizes 10 100 1000]
    python bench/secagg_overhead.py --sim [--sizes 10 100 1000]
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shoal.privacy import _secagg as sa

LABEL = "bench/0"
MODEL = 651
HERE = Path(__file__).resolve().parent


def one_round(n: int, graph_kind: str) -> dict[str, float]:
    """Every step of one round among ``n`` clients (client 1 only: full graph at 1000)."""
    keys = {u: sa.ClientKeys.derive(secrets.token_bytes(32), LABEL) for u in range(1, n + 1)}
    publics = {u: k.public() for u, k in keys.items()}
    degree = sa.default_degree(n) if graph_kind == "default" else n - 1
    start = time.perf_counter()
    graph = sa.Graph.build(publics, degree, sa.graph_seed(LABEL, publics))
    out: dict[str, float] = {"graph_s": time.perf_counter() - start, "degree": graph.degree}
    t = sa.group_threshold(2 / 3, graph.group_size)
    out["t"] = t
    whole = graph_kind == "default" or n <= 100
    clients = list(keys) if whole else [1]
    x = np.random.default_rng(0).normal(size=MODEL)

    start = time.perf_counter()
    sent = {u: sa.share(u, keys[u], publics, t, LABEL, graph.neighbours(u)) for u in clients}
    out["share_s"] = (time.perf_counter() - start) / len(clients)
    out["share_bytes"] = sum(len(b) for v, b in sent[1].items() if v != 1)

    start = time.perf_counter()
    masked = {
        u: sa.mask(u, keys[u], x, publics, LABEL, neighbours=graph.neighbours(u)) for u in clients
    }
    out["mask_s"] = (time.perf_counter() - start) / len(clients)
    out["mask_bytes"] = masked[1].nbytes
    if not whole:
        return out

    survivors = set(masked)
    start = time.perf_counter()
    reveals = {
        w: sa.reveal(
            w,
            keys[w],
            publics,
            {u: s[w] for u, s in sent.items() if w in s},
            survivors,
            LABEL,
            graph,
        )
        for w in clients
    }
    out["reveal_s"] = (time.perf_counter() - start) / n
    out["reveal_bytes"] = 66 * sum(len(d) for d in reveals[1].values())
    masked_sum = np.sum(list(masked.values()), axis=0, dtype=np.uint64)
    start = time.perf_counter()
    total = sa.unmask(masked_sum, survivors, publics, reveals, t, LABEL, graph=graph)
    out["server_s"] = time.perf_counter() - start
    assert np.allclose(total, n * x, atol=n * 2.0**-24)
    return out


def steps(sizes: list[int], graph_kind: str) -> None:
    print(
        "| clients | k, t | graph (s) | share (s/client) | mask (s/client) | reveal (s/client) "
        "| server unmask (s) | upload/client: keys + shares + masked + reveal (kB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        r = one_round(n, graph_kind)
        up = (2 * 32 + r["share_bytes"] + r["mask_bytes"] + r.get("reveal_bytes", 0)) / 1000
        reveal = f"{r['reveal_s']:.4f}" if "reveal_s" in r else "not run"
        server = f"{r['server_s']:.3f}" if "server_s" in r else "not run"
        print(
            f"| {n} | {r['degree']:.0f}, {r['t']:.0f} | {r['graph_s']:.4f} | {r['share_s']:.4f} "
            f"| {r['mask_s']:.4f} | {reveal} | {server} | {up:.1f} |",
            flush=True,
        )


def sim(sizes: list[int], rounds: int | None, repeats: int) -> None:
    """Plain then secure FedAvg at each size, ``repeats`` times, in this one process."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from helpers.digits import StrategyDigits, accuracy, digits_data  # type: ignore[import-not-found]

    import shoal
    from shoal.strategies import FedAvg, SecureFedAvg

    class SecureDigits(shoal.Swarm):
        def __init__(self, rounds: int) -> None:
            super().__init__()
            self.max_iterations = rounds
            self.set_global("weights", {"W": np.zeros((64, 10)), "b": np.zeros(10)})
            self.set_global("lr", 0.5)
            self.set_global("epochs", 1)
            worker = HERE.parent / "tests" / "helpers" / "digits_worker.py"
            self.worker = shoal.Task(shoal.Module(worker, datasets=["digits"]), alias="worker")
            self.secure = SecureFedAvg().tasks(self, datasets=["digits"])

        def execute(self) -> shoal.Task:
            return self.secure(self.worker)

    with tempfile.TemporaryDirectory() as folder:
        path, X_test, y_test = digits_data(Path(folder))

        def run(kind: str, nodes: int, rounds: int) -> tuple[list[float], list[float], float, str]:
            """Wall and CPU seconds of rounds 2..R (round 1 carries start-up), accuracy,
            task means. CPU: this process's (the inline executor runs every task here),
            less sensitive than wall time to other users of a shared machine."""
            swarm = SecureDigits(rounds) if kind == "secure" else StrategyDigits(FedAvg(), rounds)
            starts: list[tuple[float, float]] = []

            def progress(what: str, iteration: int, done: int, scheduled: int) -> None:
                if what == "iteration":
                    starts.append((time.perf_counter(), time.process_time()))

            out = shoal.simulate(
                swarm,
                nodes=nodes,
                datasets={"digits": path},
                partition="iid",
                seed=0,
                executor="inline",
                progress=progress,
            )
            bounds = [*starts, (time.perf_counter(), time.process_time())]
            assert out.ok, (out.reason, [f.traceback for f in out.failures][:3])
            assert len(starts) == rounds, starts
            acc = accuracy(out.globals["weights"], X_test, y_test)
            by = {t.alias: t.mean_s * 1000 for t in out.timings}
            order = ["secagg_advertise", "secagg_share", "worker"]
            order += ["secagg_reveal", "secagg_aggregator"]
            means = " / ".join(f"{by[a]:.1f}" for a in order) if kind == "secure" else ""
            pairs = list(itertools.pairwise(bounds))[1:]
            return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs], acc, means

        print(
            "| nodes | rounds timed | FedAvg wall / CPU (s/round) | secure FedAvg wall / CPU "
            "(s/round) | overhead wall / CPU | accuracy plain / secure | secure task means, "
            "ms: advertise / share / worker / reveal / aggregator | bench wall (s) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for n in sizes:
            r = rounds or (5 if n <= 100 else 3)
            wall: dict[str, list[float]] = {"plain": [], "secure": []}
            cpu: dict[str, list[float]] = {"plain": [], "secure": []}
            acc, means = {}, ""
            began = time.perf_counter()
            for _ in range(repeats):  # alternating, so load drifts hit both alike
                for kind in ("plain", "secure"):
                    w, c, acc[kind], m = run(kind, n, r)
                    wall[kind] += w
                    cpu[kind] += c
                    means = m or means
            mw = {k: statistics.median(v) for k, v in wall.items()}
            mc = {k: statistics.median(v) for k, v in cpu.items()}
            print(
                f"| {n} | {len(wall['plain'])} + {len(wall['secure'])} "
                f"| {mw['plain']:.2f} / {mc['plain']:.2f} "
                f"| {mw['secure']:.2f} / {mc['secure']:.2f} "
                f"| {mw['secure'] / mw['plain']:.1f}x / {mc['secure'] / mc['plain']:.1f}x "
                f"| {acc['plain']:.4f} / {acc['secure']:.4f} | {means} "
                f"| {time.perf_counter() - began:.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--graph", choices=["default", "full"], default="default")
    parser.add_argument("--sim", action="store_true", help="whole simulated rounds")
    parser.add_argument(
        "--rounds", type=int, default=None, help="--sim: rounds per run (5; 3 above 100 nodes)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="--sim: runs of each kind")
    args = parser.parse_args()
    if args.sim:
        sim(args.sizes, args.rounds, args.repeats)
    else:
        steps(args.sizes, args.graph)


if __name__ == "__main__":
    main()
