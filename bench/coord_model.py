"""The coordinator's cost on paper, checked against ``bench/coord_load.py``.

docs/scale.md ("The coordinator's cost on paper") states how the coordinator's work
grows with nodes N, iterations and swarms. This script runs ``coord_load.py`` (a real
coordinator, N light node clients, one swarm: a worker on every node feeding one
aggregator) at several N, and prints, for each N, what the model predicts and what the
run measured: requests by kind, store rows by table, CPU per request and memory.

    python bench/coord_model.py [--nodes 100 500 1000] [--iterations 3]

The counts (requests, rows) are exact predictions and must match; CPU and memory are
fitted constants (per request, per node) whose spread across N says how linear they are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def predict(n: int, iterations: int) -> dict[str, int]:
    """What one swarm (worker on N nodes -> one aggregator, I iterations) and N enrolled
    nodes cost in requests and store rows, from what each step does (docs/scale.md).

    The probe node of coord_load is one more node, so N + 1 nodes enrol and the
    aggregator runs on one of them.
    """
    nodes = n + 1  # the driver's probe enrols too
    per_iter = n + 1  # instances per iteration: a worker per node, one aggregator
    instances = iterations * per_iter
    return {
        # a long-poll answer carries each instance's run instruction, once
        "run instructions delivered": instances,
        "requests: started": instances,
        "requests: done": instances,
        # worker: globals.get, results.add, batch(log, metric); aggregator: results.list,
        # globals.set
        "requests: world": iterations * (3 * n + 2),
        # each node fetches a module's bundle once per digest (two modules, but the
        # aggregator's node fetches both)
        "requests: bundle": n + 1,
        "rows: nodes": nodes,
        # NodeJoined per node, InstanceStarted + InstanceSucceeded per instance, and the
        # swarm's SwarmSubmitted (its end is a row of the swarms table, not an event).
        # Events of other kinds (a node's long poll lost under load: NodeLost /
        # NodeRestarted) are not part of the model; the fitted table lists them.
        "rows: events of the kinds below": nodes + 2 * instances + 1,
        "rows: events SwarmSubmitted": 1,
        "rows: events NodeJoined": nodes,
        "rows: events InstanceStarted": instances,
        "rows: events InstanceSucceeded": instances,
        "rows: results": iterations * n,
        "rows: logs": iterations * n,
        "rows: metrics": iterations * n,
        # the initial global and one set per iteration
        "rows: global_history": iterations + 1,
    }


_MODELLED = ("SwarmSubmitted", "NodeJoined", "InstanceStarted", "InstanceSucceeded")


def other_events(fig: dict[str, Any]) -> str:
    """The events of kinds the model leaves out, by kind (``-``: none)."""
    rows = fig["store_rows"]
    kinds = [k.removeprefix("event ") for k in rows if k.startswith("event ")]
    return ", ".join(f"{k} {rows[f'event {k}']}" for k in kinds if k not in _MODELLED) or "-"


def measured(fig: dict[str, Any]) -> dict[str, int]:
    ep = fig["endpoints"]
    rows = {k.removeprefix("shoal_"): v for k, v in fig["store_rows"].items()}

    def count(kind: str) -> int:
        return int(ep.get(kind, {}).get("requests", 0))

    return {
        "run instructions delivered": int(fig["instructions_by_kind"].get("run", 0)),
        "requests: started": count("started"),
        "requests: done": count("done"),
        "requests: world": count("world"),
        "requests: bundle": count("bundle"),
        "rows: nodes": rows.get("nodes", 0),
        "rows: events of the kinds below": sum(rows.get(f"event {k}", 0) for k in _MODELLED),
        "rows: events SwarmSubmitted": rows.get("event SwarmSubmitted", 0),
        "rows: events NodeJoined": rows.get("event NodeJoined", 0),
        "rows: events InstanceStarted": rows.get("event InstanceStarted", 0),
        "rows: events InstanceSucceeded": rows.get("event InstanceSucceeded", 0),
        "rows: results": rows.get("results", 0),
        "rows: logs": rows.get("logs", 0),
        "rows: metrics": rows.get("metrics", 0),
        "rows: global_history": rows.get("global_history", 0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[100, 500, 1000])
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--duration", type=float, default=None, help="seconds (default: by N)")
    args = p.parse_args(argv)
    figs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-coord-model-") as tmp:
        for n in args.nodes:
            duration = args.duration or 90.0 + 0.12 * n
            out = Path(tmp) / f"{n}.json"
            cmd = [sys.executable, str(HERE / "coord_load.py"), "--nodes", str(n)]
            cmd += ["--duration", str(duration), "--iterations", str(args.iterations)]
            cmd += ["--json", str(out)]
            print("$", " ".join(cmd[1:]), flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300)
            if not out.exists():
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                return 2
            figs[n] = json.loads(out.read_text())
            figs[n]["duration"] = duration
    bad = 0
    print()
    print("| quantity | " + " | ".join(f"N={n} model / measured" for n in figs) + " |")
    print("|---|" + "---|" * len(figs))
    models = {n: predict(n, args.iterations) for n in figs}
    meas = {n: measured(f) for n, f in figs.items()}
    for key in models[next(iter(figs))]:
        cells = []
        for n in figs:
            m, got = models[n][key], meas[n][key]
            bad += m != got
            cells.append(f"{m} / {got}" + ("" if m == got else " **differs**"))
        print(f"| {key} | " + " | ".join(cells) + " |")
    print()
    print("| fitted figure | " + " | ".join(f"N={n}" for n in figs) + " |")
    print("|---|" + "---|" * len(figs))
    per_req = [f["coord_cpu_s"] * 1000 / max(f["requests"], 1) for f in figs.values()]
    print("| coordinator CPU per request, ms | " + " | ".join(f"{x:.2f}" for x in per_req) + " |")
    pss = [f["coord_pss_peak"] / 2**20 for f in figs.values()]
    print("| coordinator PSS peak, MiB | " + " | ".join(f"{x:.0f}" for x in pss) + " |")
    rps = [f["requests"] / f["duration"] for f in figs.values()]
    print("| requests per second, whole run | " + " | ".join(f"{x:.0f}" for x in rps) + " |")
    other = [
        ", ".join(f"{k} {v}" for k, v in f["instructions_by_kind"].items() if k != "run") or "-"
        for f in figs.values()
    ]
    print("| other instructions delivered | " + " | ".join(other) + " |")
    print("| other events stored | " + " | ".join(other_events(f) for f in figs.values()) + " |")
    status = [str(f.get("swarm_status")) for f in figs.values()]
    print("| swarm | " + " | ".join(status) + " |")
    ns = list(figs)
    if len(ns) >= 2:
        slope = (pss[-1] - pss[0]) / (ns[-1] - ns[0]) * 1024
        print(f"\nPSS slope {ns[0]} -> {ns[-1]} nodes: {slope:.0f} KiB per node")
    incomplete = [n for n, f in figs.items() if f.get("swarm_status") != "succeeded"]
    if incomplete:
        print(f"the swarm did not finish at N={incomplete}: counts are partial", file=sys.stderr)
    return 1 if bad or incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
