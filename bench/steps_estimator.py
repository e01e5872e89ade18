"""A steps estimator over many simulated nodes and a large table: seconds and peak memory.

Writes a table of ROWS rows (a float column ``x``, a group column ``g``), splits it by
rows over NODES simulated nodes (``partition="iid"``), runs a filtered
``GroupMeanEstimator`` artifact and checks it against pandas on the pooled table.

    nice -n 10 python bench/steps_estimator.py --nodes 1000 --rows 1000000

Prints wall seconds (split: writing the table, the simulation including the partition)
and peak RSS of this process and of the largest worker process (``getrusage``).
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import shoal
from shoal.steps import GroupMeanEstimator, QueryFeature


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", default="process")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"x": rng.normal(size=args.rows), "g": rng.choice(list("abcdefgh"), args.rows)}
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = Path(tmp) / "t.parquet"
        table.to_parquet(path)
        t1 = time.perf_counter()
        est = GroupMeanEstimator(by="g", feature="x", query=QueryFeature("x") > -1.0)
        run = shoal.simulate(
            est.artifact(dataset="t"),
            nodes=args.nodes,
            datasets={"t": path},
            partition="iid",
            executor=args.executor,
            workers=args.workers,
            run_dir=Path(tmp) / "run",
        )
        t2 = time.perf_counter()
    got = run.globals["result"]
    want = table[table.x > -1.0].groupby("g").x.mean()
    ok = all(math.isclose(got[k], v, rel_tol=1e-9) for k, v in want.items())
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"nodes={args.nodes} rows={args.rows} write={t1 - t0:.1f}s simulate={t2 - t1:.1f}s "
        f"peak_rss_main={me:.0f}MiB peak_rss_largest_worker={kids:.0f}MiB "
        f"{'OK: equals pandas' if ok else 'MISMATCH'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
