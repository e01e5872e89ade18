"""The persistor and the model selector, after a run: models into the workspace.

Writes ``<workspace>/server/models/``: ``round_<r>.msgpack`` (the global model after
each round), ``FL_global_model.msgpack`` (the last) and, with an
``IntimeModelSelector``, ``best_FL_global_model.msgpack`` with ``best.json`` (which
round and its metric). Sites report the metric of the global model they received, so
round ``r``'s metric scores the model written after round ``r - 1``. Files are shoal's
codec (never pickle): ``shoal._codec.decode`` reads them back as NumPy arrays. A
cross-site evaluation writes ``<workspace>/server/<cross_val_dir>/cross_val_results.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoal._codec import encode
from shoal._job.fed_job import SERVER, FedJob
from shoal._job.objects import IntimeModelSelector
from shoal._job.workflows import CrossSiteModelEval


def persist(job: FedJob, run: Any, workspace: Path) -> Path:
    """Write the run's global models; returns the models folder."""
    out = workspace / "server" / "models"
    out.mkdir(parents=True, exist_ok=True)
    history: dict[int, Any] = run.globals.history("weights")
    for it, weights in sorted(history.items()):
        if it >= 0:
            (out / f"round_{it}.msgpack").write_bytes(encode(weights))
    matrix = run.globals.get("cross_val_results")
    if matrix is not None:  # cross-site evaluation: FLARE's file, in its folder
        folder = next(
            (c.cross_val_dir for c in job.apps[SERVER].components.values()
             if isinstance(c, CrossSiteModelEval)),
            "cross_site_val",
        )  # fmt: skip
        where = workspace / "server" / folder
        where.mkdir(parents=True, exist_ok=True)
        (where / "cross_val_results.json").write_text(json.dumps(matrix, indent=2) + "\n")
    if "weights" not in run.globals:
        return out
    (out / "FL_global_model.msgpack").write_bytes(encode(run.globals["weights"]))
    selectors = [
        c for c in job.apps[SERVER].components.values() if isinstance(c, IntimeModelSelector)
    ]
    metrics = run.globals.get("shoal.history.weights") or []
    if selectors and metrics:
        sel = selectors[0]
        sign = -1.0 if sel.negate_key_metric else 1.0
        scored = [
            (sign * float(m[sel.key_metric]), r)
            for r, m in enumerate(metrics)
            if isinstance(m, dict) and sel.key_metric in m and (r - 1) in history
        ]
        if scored:
            value, r = max(scored)
            (out / "best_FL_global_model.msgpack").write_bytes(encode(history[r - 1]))
            best = {"round": r - 1, "key_metric": sel.key_metric, "value": sign * value}
            (out / "best.json").write_text(json.dumps(best) + "\n")
    return out
