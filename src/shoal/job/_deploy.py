"""``shoal deploy JOB_ROOT``: an exported job (``export_job``) deployed to a coordinator.

The folder is read back with :func:`shoal._job.load.load_job` and compiled by the same
:func:`shoal.job._run.job_swarm` as ``simulator_run``, so a job runs on a real
deployment as in the simulator: on the node ``server`` and the sites ``site-1..site-N``
(``shoal up --job`` starts nodes with these ids).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError
from shoal._job.fed_job import FedJob
from shoal._job.load import load_job
from shoal.job._run import job_sites, job_swarm


def find_job(path: str | Path) -> Path | None:
    """The exported job in ``path``: ``path`` itself when it holds ``job.json``, or its
    only sub-folder that does (``path`` is then the ``job_root`` given to
    ``export_job``); None when ``path`` is not a job folder."""
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / "job.json").is_file():
        return p
    found = sorted(c for c in p.iterdir() if (c / "job.json").is_file())
    if len(found) > 1:
        raise ShoalError(
            f"{p} holds {len(found)} exported jobs ({', '.join(c.name for c in found)})",
            code="job.config",
            hint=f"deploy one of them: shoal deploy {found[0]}",
        )
    return found[0] if found else None


def load(path: str | Path, n_clients: int | None = None) -> tuple[FedJob, list[str]]:
    """The job exported in ``path`` and the sites it runs on (checked, nothing started)."""
    folder = find_job(path)
    if folder is None:
        raise ShoalError(
            f"{path} is not an exported job (no job.json in it or in one sub-folder)",
            code="job.config",
            hint="pass the folder job.export_job(job_root) wrote, or its job_root",
        )
    job = load_job(folder)
    sites = job_sites(job, n_clients)
    with tempfile.TemporaryDirectory(prefix="shoal-job-") as tmp:
        job_swarm(job, sites, tmp)  # every configuration problem, before any waiting
    return job, sites


def deploy_job(
    client: Any,
    path: str | Path,
    seed: int = 0,
    task_timeout: float | None = None,
    n_clients: int | None = None,
) -> str:
    """Deploy the job exported in ``path`` with ``client`` (a :class:`shoal.Client`);
    returns the swarm id."""
    job, sites = load(path, n_clients)
    with tempfile.TemporaryDirectory(prefix="shoal-job-") as tmp:
        swarm = job_swarm(job, sites, tmp, seed)
        swarm_id: str = client.deploy(swarm, seed=seed, task_timeout=task_timeout)
    return swarm_id
