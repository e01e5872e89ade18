"""A job whose server workflow is a user's own ``ModelController``: its ``run()`` as a
controller task on ``server`` over the sites' on-demand task (DESIGN 3, 3c), for
``simulator_run`` and ``shoal deploy`` alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import shoal
from shoal._codec import encode
from shoal._job.fed_job import SERVER, FedJob
from shoal._job.model_controller import controller_spec
from shoal._job.objects import ModelController
from shoal.job._controller import CLIENT_ALIAS

_CLIENT = '''"""shoal.job: a site's on-demand task of job {name!r} (generated)."""

import json
from pathlib import Path

from shoal.job._controller import run_client

HERE = Path(__file__).parent


def main():
    run_client(HERE, json.loads((HERE / "job_site.json").read_text()))
'''

_SERVER = '''"""shoal.job: the controller task of job {name!r} (generated)."""

import json
from pathlib import Path

from shoal.job._controller import run_controller

HERE = Path(__file__).parent


def main():
    run_controller(HERE, json.loads((HERE / "job_server.json").read_text()))
'''


def controller_swarm(
    job: FedJob, controller: ModelController, sites: list[str], workdir: str | Path, seed: int
) -> shoal.Swarm:
    """``job``, whose server workflow is ``controller``, as a Swarm: its ``run()`` as a
    controller task on ``server`` over the ``sites``' on-demand task (code under
    ``workdir``). The same Swarm runs in the simulator and on a coordinator."""
    from shoal.job._run import _initial_weights, _site_config, fresh_package

    ws = Path(workdir)
    stem = job.name.replace("-", "_")
    site_pkg = fresh_package(ws / "site_app" / f"job_{stem}")
    server_pkg = fresh_package(ws / "server_app" / f"ctl_{stem}")
    (site_pkg / "__init__.py").write_text(_CLIENT.format(name=job.name))
    # a controller's run() names its tasks as it goes (send_model_and_wait(task_name=)):
    # no list to check here; a site without an executor for one fails that call
    site_config = _site_config(job, sites, site_pkg, [])
    (site_pkg / "job_site.json").write_text(
        json.dumps({"name": job.name, "sites": site_config}, indent=2)
    )
    source, spec = controller_spec(controller)
    (server_pkg / "controller").mkdir()
    shutil.copy2(source, server_pkg / "controller" / source.name)
    (server_pkg / "controller.msgpack").write_bytes(encode(spec))
    (server_pkg / "__init__.py").write_text(_SERVER.format(name=job.name))
    server_config = {
        "name": job.name,
        "seed": seed,
        "sites": sites,
        "min_clients": max(1, job.min_clients),
    }
    (server_pkg / "job_server.json").write_text(json.dumps(server_config, indent=2))
    weights = _initial_weights(job)

    class ControllerSwarm(shoal.Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.name = job.name
            self.max_iterations = 1
            self.set_global("weights", weights)
            self.client = shoal.Task(
                shoal.Module(site_pkg, name=site_pkg.name),
                alias=CLIENT_ALIAS,
                specified_ids=sites,
                on_demand=True,
            )
            self.controller = shoal.Task(
                shoal.Module(server_pkg, name=server_pkg.name),
                alias="controller",
                method="any",
                maximum=1,
                specified_ids=[SERVER],
            )

        def execute(self) -> shoal.Task:
            return self.controller()

    return ControllerSwarm()
