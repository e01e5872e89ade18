"""``FedJob.simulator_run``: a job with a built-in controller as an ordinary plan.

The plan is the Swarm dialect's: a worker task on the sites (``specified_ids``) and
shoal.strategies' aggregator task on the ``server`` node, one iteration per round. The
simulator's nodes are ``server`` and ``site-1..site-N`` (DESIGN 3c).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import shoal
from shoal._errors import ShoalError
from shoal._job.export import describe
from shoal._job.fed_job import ALL_CLIENTS, SERVER, FedJob
from shoal._job.objects import FedAvg, ModelController, ModelPersistor, ScriptRunner
from shoal.job._persist import persist
from shoal.strategies import Strategy
from shoal.strategies._keys import config_key

_WORKER = '''"""shoal.job: one site round of job {name!r} (generated)."""

import json
from pathlib import Path

from shoal.job._site import run_site
from shoal.runtime import Task

HERE = Path(__file__).parent


class Worker(Task):
    def run(self):
        run_site(self, HERE, json.loads((HERE / "job_site.json").read_text()))


def main():
    Worker().run()
'''


_SERVER = '''"""shoal.job: the server round of job {name!r} (generated)."""

import json

from shoal.job._server import run_server

CONFIG = json.loads({config!r})


def main():
    run_server(CONFIG)
'''


def _unsupported(what: str, hint: str) -> ShoalError:
    return ShoalError(what, code="job.unsupported", hint=hint)


def _initial_weights(job: FedJob) -> dict[str, np.ndarray]:
    for obj in job.apps[SERVER].components.values():
        if isinstance(obj, ModelPersistor):
            model = obj.model
            if hasattr(model, "state_dict"):
                model = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
            return {k: np.asarray(v, dtype=np.float64) for k, v in model.items()}
    raise ShoalError(
        f"job {job.name!r} has no initial model on the server",
        code="job.config",
        hint="add one: job.to_server(PTModel(Net())) or job.to_server(NPModel({...}))",
    )


def _controller(job: FedJob) -> FedAvg | ModelController:
    server = job.apps.get(SERVER)
    flows = [server.components[w] for w in server.workflows] if server else []
    if len(flows) != 1:
        raise ShoalError(
            f"job {job.name!r} has {len(flows)} server workflows",
            code="job.config",
            hint="send exactly one controller with job.to_server(FedAvg(...))",
        )
    (flow,) = flows
    if isinstance(flow, FedAvg):
        return flow
    if isinstance(flow, ModelController):
        return flow  # its own run(): a controller task over on-demand tasks (_custom)
    raise _unsupported(
        f"job {job.name!r}: controller {type(flow).__name__} cannot run here",
        "use the built-in FedAvg or FedOpt",
    )


def _site_config(job: FedJob, sites: list[str], pkg: Path) -> dict[str, Any]:
    desc = describe(job)
    out: dict[str, Any] = {}
    for target, app in job.apps.items():
        if target == SERVER:
            continue
        runners = [c for c in app.components.values() if isinstance(c, ScriptRunner)]
        if not runners:
            continue
        runner = runners[0]
        for res in app.resources:
            src = Path(res)
            if src.is_dir():
                shutil.copytree(src, pkg, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copy2(src, pkg / src.name)
        comps = desc["apps"][target]["components"]
        out[target] = {
            "runner": {
                "script": runner.script,
                "script_args": runner.script_args,
                "framework": runner.framework,
                "external": runner.launch_external_process,
                "command": runner.command,
            },
            "task_data_filters": [
                {"tasks": f["tasks"], "filter": comps[f["filter"]]}
                for f in desc["apps"][target]["task_data_filters"]
            ],
            "task_result_filters": [
                {"tasks": f["tasks"], "filter": comps[f["filter"]]}
                for f in desc["apps"][target]["task_result_filters"]
            ],
        }
    # a site with its own runner uses it; every other site the @ALL one
    for site in sites:
        if site not in out and ALL_CLIENTS not in out:
            raise ShoalError(
                f"job {job.name!r}: site {site!r} has no ScriptRunner",
                code="job.config",
                hint="job.to_clients(ScriptRunner(...)) or job.to(ScriptRunner(...), site)",
            )
    return out


def simulator_run(
    job: FedJob,
    workspace: str,
    n_clients: int | None = None,
    threads: int | None = None,
    gpu: str | None = None,
    *,
    executor: str = "process",
    seed: int = 0,
    raise_on_failure: bool = True,
) -> shoal.SimulationRun:
    """Run ``job`` on ``server`` and ``site-1..site-N`` in shoal's simulator."""
    flow = _controller(job)
    if not isinstance(flow, FedAvg):
        from shoal.job._custom import simulate_model_controller

        return simulate_model_controller(
            job,
            flow,
            workspace,
            n_clients,
            threads,
            executor=executor,
            seed=seed,
            raise_on_failure=raise_on_failure,
        )
    controller: FedAvg = flow
    named = sorted(t for t in job.apps if t not in (SERVER, ALL_CLIENTS))
    if n_clients is None:
        n_clients = len(named) if named else controller.num_clients
    sites = named or [f"site-{i}" for i in range(1, n_clients + 1)]
    ws = Path(workspace)
    pkg = ws / "site_app" / f"job_{job.name.replace('-', '_')}"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(_WORKER.format(name=job.name))
    config = {
        "name": job.name,
        "num_rounds": controller.num_rounds,
        "task_name": controller.task_name,
        "sites": _site_config(job, sites, pkg),
    }
    (pkg / "job_site.json").write_text(json.dumps(config, indent=2))
    strategy = Strategy.from_config(controller.strategy())
    weights = _initial_weights(job)
    per_round = min(controller.num_clients, len(sites))

    class JobSwarm(shoal.Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.name = job.name
            self.max_iterations = controller.num_rounds
            self.set_global("weights", weights)
            self.worker = shoal.Task(
                shoal.Module(pkg, name=pkg.name),
                method="all",
                maximum=per_round,  # FedAvg(num_clients): sites per round
                specified_ids=sites,
                # a lost site fails the round only below the job's min_clients
                min_results=min(job.min_clients, per_round),
            )
            self.set_global(config_key("weights"), strategy.client_config())
            server = {
                "aggregator": {"strategy": strategy.config(), "key": "weights"},
                "stop": list(controller._stop) if controller._stop else None,
                "patience": controller.patience,
            }
            source = _SERVER.format(name=job.name, config=json.dumps(server))
            self.aggregator = shoal.Task(
                shoal.Module(source, name="shoal_job_server"),
                method="any",
                maximum=1,
                specified_ids=[SERVER],
            )

        def execute(self) -> shoal.Task:
            return self.aggregator(self.worker())

    nodes = [shoal.NodeProfile(name=SERVER)] + [shoal.NodeProfile(name=s) for s in sites]
    run = shoal.simulate(
        JobSwarm(),
        nodes=nodes,
        seed=seed,
        executor=executor,
        workers=threads,
        run_dir=ws / "run",
        raise_on_failure=raise_on_failure,
    )
    if run.ok:
        persist(job, run, ws)
    return run
