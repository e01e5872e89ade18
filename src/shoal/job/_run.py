"""``FedJob.simulator_run``: a job with a built-in controller as an ordinary plan.

:func:`job_swarm` compiles a job with a built-in workflow to a Swarm (so to an
ordinary plan): FedAvg / FedOpt are a worker task on the sites (``specified_ids``) and
shoal.strategies' aggregator task on the ``server`` node, one iteration per round;
Cyclic is the engine's chain (or one task per site, in the job's order) then a server
task; cross-site evaluation is ``submit`` then ``validate`` on the sites then a server
task. The simulator's nodes are ``server`` and ``site-1..site-N`` (DESIGN 3c); ``shoal
deploy JOB_ROOT`` deploys the same Swarm to a coordinator.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any, Union

import numpy as np

import shoal
from shoal._errors import ShoalError
from shoal._job.export import describe
from shoal._job.fed_job import ALL_CLIENTS, SERVER, FedJob
from shoal._job.objects import (
    FedAvg,
    IntimeModelSelector,
    ModelController,
    ModelPersistor,
    ScriptRunner,
)
from shoal._job.workflows import CrossSiteModelEval, Cyclic
from shoal.job._persist import persist
from shoal.strategies import SecureFedAvg, Strategy
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


def _initial_weights(job: FedJob, required: bool = True) -> dict[str, np.ndarray] | None:
    server = job.apps.get(SERVER)
    for obj in server.components.values() if server else []:
        if isinstance(obj, ModelPersistor):
            model = obj.model
            if hasattr(model, "state_dict"):
                model = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
            return {k: np.asarray(v, dtype=np.float64) for k, v in model.items()}
    if not required:
        return None
    raise ShoalError(
        f"job {job.name!r} has no initial model on the server",
        code="job.config",
        hint="add one: job.to_server(PTModel(Net())) or job.to_server(NPModel({...}))",
    )


Workflow = Union[FedAvg, Cyclic, CrossSiteModelEval]  # noqa: UP007 (a runtime alias, py3.10)
BUILT_IN = (FedAvg, Cyclic, CrossSiteModelEval)


def _controller(job: FedJob) -> Workflow | ModelController:
    server = job.apps.get(SERVER)
    flows = [server.components[w] for w in server.workflows] if server else []
    if len(flows) != 1:
        raise ShoalError(
            f"job {job.name!r} has {len(flows)} server workflows",
            code="job.config",
            hint="send exactly one controller with job.to_server(FedAvg(...))",
        )
    (flow,) = flows
    if isinstance(flow, BUILT_IN):
        return flow
    if isinstance(flow, ModelController):
        return flow  # its own run(): a controller task over on-demand tasks (_custom)
    raise _unsupported(
        f"job {job.name!r}: controller {type(flow).__name__} cannot run here",
        "use a built-in workflow: FedAvg, FedOpt, Cyclic or CrossSiteModelEval",
    )


def _task_names(flow: Workflow) -> list[str]:
    if isinstance(flow, CrossSiteModelEval):
        return [flow.submit_model_task_name, flow.validation_task_name]
    return [flow.task_name]


def _shipped(obj: Any, spec: dict[str, Any], pkg: Path) -> dict[str, Any]:
    """``spec`` of a user executor or filter, its defining file shipped with the job.

    shoal's own classes are imported on the site; any other class's source file is
    copied into the job's package and imported from there, so the sites need only
    shoal installed (as a FLARE job carries its custom code).
    """
    cls = type(obj)
    if cls.__module__ == "shoal" or cls.__module__.startswith("shoal."):
        return spec
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = None
    if source is None or "<locals>" in cls.__qualname__:
        raise ShoalError(
            f"{cls.__qualname__}: its source file cannot be shipped to the sites",
            code="job.config",
            hint="define executors and filters at the top level of a .py file",
        )
    stem = Path(source).stem if cls.__module__ == "__main__" else cls.__module__.rpartition(".")[2]
    shutil.copy2(source, pkg / f"{stem}.py")
    return {**spec, "path": f"{stem}.{cls.__qualname__}"}


def _site_config(job: FedJob, sites: list[str], pkg: Path, task_names: list[str]) -> dict[str, Any]:
    """Each site's executors and filters; every site must have an executor for each of
    ``task_names`` (the tasks the workflow sends)."""
    desc = describe(job)
    out: dict[str, Any] = {}
    for target, app in job.apps.items():
        if target == SERVER:
            continue
        for res in app.resources:
            src = Path(res)
            if src.is_dir():
                shutil.copytree(src, pkg, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copy2(src, pkg / src.name)
        comps = desc["apps"][target]["components"]
        executors: list[dict[str, Any]] = []
        for tasks, cid in app.executors:
            obj = app.components[cid]
            if isinstance(obj, ScriptRunner):
                runner = {
                    "script": obj.script,
                    "script_args": obj.script_args,
                    "framework": obj.framework,
                    "external": obj.launch_external_process,
                    "command": obj.command,
                }
                executors.append({"tasks": tasks, "runner": runner})
            else:
                executors.append({"tasks": tasks, "executor": _shipped(obj, comps[cid], pkg)})
        filters: dict[str, list[dict[str, Any]]] = {"task_data": [], "task_result": []}
        for kind, tasks, cid in app.filters:
            spec = _shipped(app.components[cid], comps[cid], pkg)
            filters[kind.value].append({"tasks": tasks, "filter": spec})
        out[target] = {
            "executors": executors,
            "task_data_filters": filters["task_data"],
            "task_result_filters": filters["task_result"],
        }
    # each site needs an executor for each task the workflow sends it (own app first)
    every = out.get(ALL_CLIENTS, {}).get("executors", [])
    for site in sites:
        entries = [*out.get(site, {}).get("executors", []), *every]
        if not entries:  # before anything runs, whatever tasks the controller sends
            raise ShoalError(
                f"job {job.name!r}: site {site!r} has no executor (no ScriptRunner, no Executor)",
                code="job.config",
                hint="job.to_clients(ScriptRunner(...)) or job.to(executor, site)",
            )
        for name in task_names:
            if not any("*" in e["tasks"] or name in e["tasks"] for e in entries):
                raise ShoalError(
                    f"job {job.name!r}: site {site!r} has no executor for task {name!r}",
                    code="job.config",
                    hint="job.to_clients(ScriptRunner(...)) or "
                    f"job.to(executor, {site!r}, tasks=[{name!r}])",
                )
    return out


def fresh_package(pkg: Path) -> Path:
    """``pkg`` as an empty folder (a job's generated task package, rebuilt each run)."""
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    return pkg


def job_sites(job: FedJob, n_clients: int | None = None) -> list[str]:
    """The sites a job runs on: the ones named with ``to``, else ``site-1..site-N``
    (``N`` = ``n_clients``, else the workflow's number of clients)."""
    named = sorted(t for t in job.apps if t not in (SERVER, ALL_CLIENTS))
    if named:
        return named
    flow = _controller(job)
    if n_clients is None:
        if not isinstance(flow, BUILT_IN):  # a user's ModelController: its own count
            n_clients = int(getattr(flow, "num_clients", 2))
        elif isinstance(flow, CrossSiteModelEval):
            n_clients = len(flow.participating_clients or []) or job.min_clients
        else:
            n_clients = flow.num_clients
    return [f"site-{i}" for i in range(1, n_clients + 1)]


def job_swarm(job: FedJob, sites: list[str], workdir: str | Path, seed: int = 0) -> shoal.Swarm:
    """The job as a Swarm on ``server`` and ``sites`` (its site code under ``workdir``;
    ``seed``: a user ModelController's client sampling).

    The same Swarm runs in the simulator (:func:`simulator_run`) and on a coordinator
    (``shoal deploy JOB_ROOT``).
    """
    flow = _controller(job)
    if not isinstance(flow, BUILT_IN):  # the built-ins are ModelControllers too
        from shoal.job._custom import controller_swarm

        return controller_swarm(job, flow, sites, workdir, seed)
    if isinstance(flow, CrossSiteModelEval) and flow.participating_clients:
        missing = sorted(set(flow.participating_clients) - set(sites))
        if missing:
            raise ShoalError(
                f"job {job.name!r}: participating_clients {missing} are not sites of the job",
                code="job.config",
                hint=f"the sites are {sites}",
            )
        sites = list(flow.participating_clients)
    pkg = fresh_package(Path(workdir) / "site_app" / f"job_{job.name.replace('-', '_')}")
    (pkg / "__init__.py").write_text(_WORKER.format(name=job.name))
    rounds = 1 if isinstance(flow, CrossSiteModelEval) else flow.num_rounds
    config: dict[str, Any] = {
        "name": job.name,
        "num_rounds": rounds,
        "sites": _site_config(job, sites, pkg, _task_names(flow)),
    }
    if isinstance(flow, CrossSiteModelEval):
        config["submit_task_name"] = flow.submit_model_task_name
        config["validation_task_name"] = flow.validation_task_name
    else:
        config["task_name"] = flow.task_name
    if isinstance(flow, Cyclic):
        config["start_round"] = flow.start_round
    (pkg / "job_site.json").write_text(json.dumps(config, indent=2))
    if isinstance(flow, FedAvg):
        return _fedavg_swarm(job, flow, sites, pkg)
    if isinstance(flow, Cyclic):
        return _cyclic_swarm(job, flow, sites, pkg)
    return _cross_site_swarm(job, flow, sites, pkg)


def _server_task(source: str) -> shoal.Task:
    return shoal.Task(
        shoal.Module(source, name="shoal_job_server"),
        alias="server",
        method="any",
        maximum=1,
        specified_ids=[SERVER],
    )


def _secure(job: FedJob, controller: FedAvg, sites: list[str]) -> SecureFedAvg | None:
    """The controller's secure aggregation, or None; refuses what cannot work with it.

    Every site takes part in every round: the sites that advertise their keys must be
    the ones that mask (a sampled subset would differ between the two tasks). Nothing
    on the server may read a site's result: it holds ring elements, not the update.
    """
    secure = getattr(controller, "secure", False)
    if secure is False:
        return None
    name = f"job {job.name!r}: {type(controller).__name__}(secure=...)"
    if not isinstance(secure, (bool, SecureFedAvg)):
        raise ShoalError(
            f"{name}: {secure!r} is not a shoal.strategies.SecureFedAvg",
            code="job.config",
            hint="pass secure=True or secure=shoal.strategies.SecureFedAvg(...)",
        )
    if len(sites) < 3 or controller.num_clients < len(sites):
        raise ShoalError(
            f"{name} with num_clients={controller.num_clients} on {len(sites)} sites: secure "
            "aggregation runs every site in every round, and needs at least 3",
            code="job.config",
            hint=f"set num_clients={max(len(sites), 3)} and run on at least 3 sites",
        )
    server = job.apps.get(SERVER)
    for obj in server.components.values() if server else []:
        if isinstance(obj, IntimeModelSelector):
            raise ShoalError(
                f"{name} with an IntimeModelSelector: the server never sees the sites' "
                "metrics under secure aggregation, so it cannot pick the best model",
                code="job.unsupported",
                hint="drop the IntimeModelSelector (FL_global_model is still written)",
            )
    if server and any(kind.value == "task_result" for kind, _, _ in server.filters):
        raise ShoalError(
            f"{name} with a result filter on the server: the server holds only masked "
            "updates (uniform ring elements), a filter there cannot change an update",
            code="job.config",
            hint="send the filter to the sites (job.to_clients(flt, filter_type="
            "FilterType.TASK_RESULT)): it then runs before the update is masked",
        )
    return secure if isinstance(secure, SecureFedAvg) else SecureFedAvg()


def _fedavg_swarm(job: FedJob, controller: FedAvg, sites: list[str], pkg: Path) -> shoal.Swarm:
    strategy = Strategy.from_config(controller.strategy())
    weights = _initial_weights(job)
    per_round = min(controller.num_clients, len(sites))
    secure = _secure(job, controller, sites)
    if secure is not None:
        return _secure_swarm(job, controller, secure, sites, pkg, weights)

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

    return JobSwarm()


def _secure_swarm(
    job: FedJob,
    controller: FedAvg,
    secure: SecureFedAvg,
    sites: list[str],
    pkg: Path,
    weights: dict[str, np.ndarray] | None,
) -> shoal.Swarm:
    """FedAvg under secure aggregation: shoal.strategies.SecureFedAvg's tasks around the
    job's site task; the site masks through ``train_round`` (shoal.strategies), the
    ``server`` node runs SecureFedAvg's aggregator and learns only the sum."""

    class SecureJobSwarm(shoal.Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.name = job.name
            self.max_iterations = controller.num_rounds
            self.set_global("weights", weights)
            self.worker = shoal.Task(
                shoal.Module(pkg, name=pkg.name),
                alias="worker",
                method="all",
                specified_ids=sites,
                # a site lost after sharing its keys is recovered by the others' shares
                min_results=min(job.min_clients, len(sites)),
            )
            self.secure = secure.tasks(self, sites=sites, server=SERVER, worker="worker")

        def execute(self) -> shoal.Task:
            return self.secure(self.worker)

    return SecureJobSwarm()


_RELAY_SERVER = """\"\"\"shoal.job: the end of a cyclic round of job {name!r} (generated).\"\"\"

from shoal.job._server import run_relay_server


def main():
    run_relay_server()
"""

_CROSS_SITE_SERVER = """\"\"\"shoal.job: the cross-site matrix of job {name!r} (generated).\"\"\"

from shoal.job._server import run_cross_site_server


def main():
    run_cross_site_server()
"""


def _cyclic_swarm(job: FedJob, flow: Cyclic, sites: list[str], pkg: Path) -> shoal.Swarm:
    relay_sites = sites[: flow.num_clients]
    weights = _initial_weights(job)

    class CyclicSwarm(shoal.Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.name = job.name
            self.max_iterations = flow.num_rounds
            self.set_global("weights", weights)
            module = shoal.Module(pkg, name=pkg.name)
            if flow.order == "random":  # the engine's chain: one site at a time
                self.relays = [
                    shoal.Task(module, alias="relay", specified_ids=relay_sites, order="chain")
                ]
            else:  # the job's order, every round: one task per site, in a line
                self.relays = [
                    shoal.Task(module, alias=f"relay_{i}", method="any", specified_ids=[s])
                    for i, s in enumerate(relay_sites, start=1)
                ]
            self.sink = _server_task(_RELAY_SERVER.format(name=job.name))

        def execute(self) -> shoal.Task:
            last = self.relays[0]()
            for nxt in self.relays[1:]:
                last = nxt(last)
            return self.sink(last)

    return CyclicSwarm()


def _cross_site_swarm(
    job: FedJob, flow: CrossSiteModelEval, sites: list[str], pkg: Path
) -> shoal.Swarm:
    weights = _initial_weights(job, required=False)

    class CrossSiteSwarm(shoal.Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.name = job.name
            self.max_iterations = 1
            if weights is not None:  # the server's model, evaluated as SRV_server
                self.set_global("weights", weights)
            module = shoal.Module(pkg, name=pkg.name)
            self.submit = shoal.Task(
                module,
                alias="submit",
                specified_ids=sites,
                timeout=float(flow.submit_model_timeout),
            )
            self.validate = shoal.Task(
                module,
                alias="validate",
                specified_ids=sites,
                timeout=float(flow.validation_timeout),
            )
            self.sink = _server_task(_CROSS_SITE_SERVER.format(name=job.name))

        def execute(self) -> shoal.Task:
            return self.sink(self.validate(self.submit()))

    return CrossSiteSwarm()


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
    sites = job_sites(job, n_clients)
    ws = Path(workspace)
    swarm = job_swarm(job, sites, ws, seed)  # a user's ModelController too
    nodes = [shoal.NodeProfile(name=SERVER)] + [shoal.NodeProfile(name=s) for s in sites]
    run = shoal.simulate(
        swarm,
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
