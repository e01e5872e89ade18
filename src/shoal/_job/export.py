"""``export_job``: the job as files: a readable description, the scripts, the models.

Layout of ``job_root/<job name>/``::

    meta.json                    name, min_clients, mandatory_clients, deploy map
    job.json                     every app: components ({"path", "args"}), workflows,
                                 executors and filters with their task names
    app_<target>/custom/...      the resources (scripts, folders) of each app
    app_<target>/models/<id>.msgpack   initial models, written by shoal's codec

``shoal deploy JOB_ROOT`` reads this folder back; nothing in it is pickled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal._codec import encode
from shoal._errors import ShoalError
from shoal._job.app import App
from shoal._job.describe import class_path, init_args, to_data

if TYPE_CHECKING:
    from shoal._job.fed_job import FedJob


def app_description(app: App) -> dict[str, Any]:
    """One app as JSON-able data."""
    refs = {id(obj): cid for cid, obj in app.components.items()}
    comps = {}
    for cid, obj in app.components.items():
        own = {k: v for k, v in refs.items() if v != cid}
        comps[cid] = {"path": class_path(obj), "args": to_data(init_args(obj), own)}
    return {
        "components": comps,
        "workflows": list(app.workflows),
        "executors": [{"tasks": t, "executor": e} for t, e in app.executors],
        "task_data_filters": [
            {"tasks": t, "filter": f} for ft, t, f in app.filters if ft.value == "task_data"
        ],
        "task_result_filters": [
            {"tasks": t, "filter": f} for ft, t, f in app.filters if ft.value == "task_result"
        ],
        "resources": [Path(r).name for r in app.resources],
    }


def describe(job: FedJob) -> dict[str, Any]:
    """The whole job as JSON-able data (what ``job.json`` holds)."""
    return {
        "name": job.name,
        "min_clients": job.min_clients,
        "mandatory_clients": list(job.mandatory_clients),
        "apps": {target: app_description(app) for target, app in sorted(job.apps.items())},
    }


def _model_bytes(model: Any) -> bytes:
    if hasattr(model, "state_dict"):
        model = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return encode(model)


def export_job(job: FedJob, job_root: str | Path) -> Path:
    """Write the job under ``job_root/<name>``; returns that folder."""
    out = Path(job_root) / job.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    desc = describe(job)
    deploy = {f"app_{t.lstrip('@').lower()}": [t] for t in job.apps}
    meta = {
        "name": job.name,
        "min_clients": job.min_clients,
        "mandatory_clients": list(job.mandatory_clients),
        "deploy_map": deploy,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "job.json").write_text(json.dumps(desc, indent=2) + "\n")
    for target, app in job.apps.items():
        folder = out / f"app_{target.lstrip('@').lower()}"
        custom = folder / "custom"
        custom.mkdir(parents=True)
        for res in app.resources:
            src = Path(res)
            if src.is_dir():
                shutil.copytree(src, custom, dirs_exist_ok=True)  # flat, as FLARE does
            elif src.is_file():
                shutil.copy2(src, custom / src.name)
            else:
                raise ShoalError(
                    f"job {job.name!r}: resource {res!r} for {target!r} does not exist",
                    code="job.config",
                    hint="pass an existing file or folder, relative to the working directory",
                )
        for cid, obj in app.components.items():
            model = getattr(obj, "model", None)
            if model is not None and (hasattr(model, "state_dict") or isinstance(model, dict)):
                (folder / "models").mkdir(exist_ok=True)
                (folder / "models" / f"{cid}.msgpack").write_bytes(_model_bytes(model))
    return out
