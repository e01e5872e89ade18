"""``load_job``: a FedJob back from ``export_job``'s folder (what deploying reads).

Every component is rebuilt from its ``{"path", "args"}`` by import path; initial
models come from ``app_<target>/models/<id>.msgpack`` (shoal's codec); scripts and
resources from ``app_<target>/custom/``. A class that cannot be imported (defined in
a ``__main__``) is refused, naming it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from shoal._codec import decode
from shoal._errors import ShoalError
from shoal._job.app import App, FilterType
from shoal._job.fed_job import FedJob


def _build(spec: Any, built: dict[str, Any]) -> Any:
    if isinstance(spec, list):
        return [_build(v, built) for v in spec]
    if not isinstance(spec, dict):
        return spec
    if "ref" in spec and len(spec) == 1:
        return built[spec["ref"]]
    if "path" in spec and "args" in spec:
        module, _, name = spec["path"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ShoalError(
                f"exported job: class {spec['path']!r} cannot be imported",
                code="job.config",
                hint="define job objects in an importable module, not in __main__",
            ) from e
        return cls(**{k: _build(v, built) for k, v in spec["args"].items()})
    return {k: _build(v, built) for k, v in spec.items()}


def load_job(folder: str | Path) -> FedJob:
    """The job ``export_job`` wrote in ``folder`` (``job_root/<name>``)."""
    folder = Path(folder)
    if not (folder / "job.json").is_file():
        raise ShoalError(
            f"{folder} holds no job.json",
            code="job.config",
            hint="pass the folder export_job returned (job_root/<job name>)",
        )
    desc = json.loads((folder / "job.json").read_text())
    job = FedJob(desc["name"], desc["min_clients"], desc["mandatory_clients"])
    for target, app_desc in desc["apps"].items():
        base = folder / f"app_{target.lstrip('@').lower()}"
        app = App(target)
        built: dict[str, Any] = {}
        for cid, spec in app_desc["components"].items():
            spec = dict(spec)
            model_file = base / "models" / f"{cid}.msgpack"
            if model_file.is_file():
                spec["args"] = {**spec["args"], "model": decode(model_file.read_bytes())}
            if "script" in spec["args"]:
                name = Path(spec["args"]["script"]).name
                spec["args"] = {**spec["args"], "script": str(base / "custom" / name)}
            built[cid] = _build(spec, built)
        app.components = built
        app.workflows = list(app_desc["workflows"])
        app.executors = [(e["tasks"], e["executor"]) for e in app_desc["executors"]]
        for kind, key in (
            (FilterType.TASK_DATA, "task_data_filters"),
            (FilterType.TASK_RESULT, "task_result_filters"),
        ):
            app.filters += [(kind, f["tasks"], f["filter"]) for f in app_desc[key]]
        app.resources = [str(base / "custom" / r) for r in app_desc["resources"]]
        job._apps[target] = app
    return job
