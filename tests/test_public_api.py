"""The public API is small and pinned: a change here is a deliberate decision."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import shoal
import shoal.job
import shoal.job.client
import shoal.privacy
import shoal.runtime
import shoal.steps
import shoal.strategies
import shoal.testing
from shoal._public import is_private

PINNED = {
    shoal: {
        "Client",
        "CodecError",
        "Condition",
        "Driver",
        "FailureRecord",
        "InvokeError",
        "LogRecord",
        "MetricRecord",
        "Module",
        "NetworkDriver",
        "NodeProfile",
        "NodeRecord",
        "Plan",
        "PlanError",
        "Problem",
        "ShoalError",
        "ShoalWarning",
        "SimulationRun",
        "Swarm",
        "SwarmFailedError",
        "SwarmStatus",
        "SwarmSummary",
        "SwarmValidationError",
        "Task",
        "TaskCounts",
        "__version__",
        "has_cycles",
        "load_plan",
        "simulate",
    },
    shoal.runtime: {
        "Globals",
        "Local",
        "Logger",
        "NetworkQuality",
        "Resources",
        "ResultRecord",
        "Results",
        "Task",
        "World",
    },
    shoal.testing: {"Fault", "Federation", "VirtualClock"},
    shoal.privacy: {
        "Charge",
        "DPNoise",
        "ExcludeVars",
        "PercentilePrivacy",
        "Quantize",
        "Gaussian",
        "Laplace",
        "bounded_count",
        "bounded_sum",
        "clip_by_norm",
        "epsilon",
        "spend",
    },
    shoal.steps: {
        "Aggregate",
        "And",
        "Arrange",
        "Artifact",
        "Collect",
        "Compare",
        "CountEstimator",
        "DP",
        "Distribute",
        "Distribution",
        "Entity",
        "Environment",
        "Estimate",
        "Estimator",
        "Finalize",
        "GroupCountEstimator",
        "GroupMeanEstimator",
        "HistogramEstimator",
        "Initialize",
        "IsIn",
        "IsNull",
        "Iterate",
        "MeanEstimator",
        "Not",
        "Operation",
        "Or",
        "Parallel",
        "QuantileEstimator",
        "Query",
        "QueryFeature",
        "QueryFilter",
        "RoundRobin",
        "SecureAdd",
        "SecureAdvertise",
        "SecureFinish",
        "SecureStart",
        "Select",
        "Sequential",
        "Step",
        "StepsError",
        "SumEstimator",
        "VarianceEstimator",
        "CollectMetadata",
        "Metadata",
        "frame_metadata",
        "metadata_artifact",
        "table_metadata",
        "to_swarm",
        # Models and transformers as steps (issue #17 points 4, 5, 8).
        "Aggregation",
        "Evaluate",
        "FitTransformers",
        "LocalCrossValidation",
        "MergeMetrics",
        "MergeTransformers",
        "ModelOperation",
        "Train",
        "TrainedModel",
        "TrainTest",
        "Transform",
        "FederatedBinarizer",
        "FederatedClamp",
        "FederatedDrop",
        "FederatedFilter",
        "FederatedKBinsDiscretizer",
        "FederatedLabelBinarizer",
        "FederatedLinearRegression",
        "FederatedLogisticRegression",
        "FederatedMinMaxScaler",
        "FederatedOneHotEncoder",
        "FederatedPipeline",
        "FederatedRandomForestClassifier",
        "FederatedRename",
        "FederatedSimpleImputer",
        "FederatedSplitter",
        "FederatedStandardScaler",
        "FederatedTransformer",
        "Model",
        "StrategyRandomForestClassifier",
    },
    shoal.strategies: {
        "Bulyan",
        "ClientUpdate",
        "DPFedAvg",
        "FedAdagrad",
        "FedAdam",
        "FedAvg",
        "FedAvgM",
        "FedProx",
        "FedYogi",
        "Krum",
        "Layout",
        "LocalRound",
        "Median",
        "MultiKrum",
        "Scaffold",
        "SecureFedAvg",
        "SecureTasks",
        "Strategy",
        "TrimmedMean",
        "flatten",
        "proximal_gradient",
        "proximal_term",
        "train_round",
        "weighted_mean",
    },
    shoal.job: {
        "Controller",
        "ExcludeVars",
        "Executor",
        "FedAvg",
        "FedAvgJob",
        "FedJob",
        "FedOpt",
        "Filter",
        "FilterType",
        "IntimeModelSelector",
        "JobCtx",
        "ModelController",
        "ModelDequantizer",
        "ModelPersistor",
        "ModelQuantizer",
        "NPModel",
        "PTModel",
        "PercentilePrivacy",
        "ScriptRunner",
        # appended (job workflows, executor context)
        "CrossSiteEval",
        "CrossSiteModelEval",
        "Cyclic",
        "FLContext",
        "Signal",
    },
    shoal.job.client: {
        "AnalyticsDataType",
        "FLModel",
        "ParamsType",
        "get_job_id",
        "get_site_name",
        "init",
        "is_evaluate",
        "is_running",
        "is_submit_model",
        "is_train",
        "log",
        "receive",
        "send",
        "system_info",
    },
}
PUBLIC = list(PINNED)


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_exports_exactly_the_pinned_names(module: ModuleType) -> None:
    assert set(module.__all__) == PINNED[module]
    for name in module.__all__:
        assert hasattr(module, name), name


def test_nothing_else_public_leaks_from_shoal() -> None:
    public = {
        n
        for n, v in vars(shoal).items()
        if not n.startswith("_") and not isinstance(v, ModuleType) and n != "annotations"
    }
    assert public <= PINNED[shoal]


@pytest.mark.parametrize("module", [shoal.runtime, shoal.testing], ids=lambda m: m.__name__)
def test_nothing_else_public_in_the_public_submodules(module: ModuleType) -> None:
    # Modules count too: `from shoal.testing import os` must not work (issue #16).
    public = {n for n in vars(module) if not n.startswith("_") and n != "annotations"}
    assert public == set(module.__all__), sorted(public - set(module.__all__))


def test_seed_002s_driver_is_the_network_driver() -> None:
    assert shoal.Driver is shoal.NetworkDriver
    assert shoal.Driver.BRIDGE.value == "bridge"


def exported(module: ModuleType) -> list[tuple[str, Any]]:
    """The exported classes and functions of a public module."""
    return [
        (name, obj)
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name)) or inspect.isfunction(obj)
    ]


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_public_objects_name_their_public_module(module: ModuleType) -> None:
    for name, obj in exported(module):
        assert obj.__module__ == module.__name__, (name, obj.__module__)
        assert getattr(module, obj.__qualname__) is obj, name  # pickle finds it again


def _one_run() -> tuple[shoal.SimulationRun, dict[str, str]]:
    """A run of real task code that records the reprs of the task-side objects."""
    source = "from shoal.runtime import Task\n\nclass T(Task):\n    def run(self):\n{}\n"
    source += "\ndef main():\n    T().run()\n"
    reader = """
        seen = {
            "Task": self,
            "World": self.world,
            "Globals": self.world.globals,
            "Results": self.world.results,
            "ResultRecord": self.world.results.select_all("v")[0],
            "Local": self.local,
            "Resources": self.local.get_resources(),
            "NetworkQuality": self.local.get_network_quality(),
            "Logger": self.logger,
        }
        self.world.results.add("reprs", {k: repr(v) for k, v in seen.items()})"""

    class One(shoal.Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            writer = source.format('        self.world.results.add("v", 1)')
            self.t = shoal.Task(shoal.Module(writer, name="t"), method="any", alias="t")
            self.u = shoal.Task(shoal.Module(source.format(reader), name="u"), alias="u")

        def execute(self) -> shoal.Task:
            return self.u(self.t())

    run = shoal.testing.Federation(nodes=1).run(One())
    assert run.ok, run.reason
    (reprs,) = run.results.select("reprs", alias="u").values()
    return run, reprs


def _instances() -> dict[str, Callable[[], object]]:
    """How to make an instance of each public class, by its public name."""
    module = shoal.Module("def main():\n    pass\n", name="m")
    problem = shoal.Problem("task.alias", "task 't'", "is used twice", "rename one")
    failure = shoal.FailureRecord("s/0/t/0/0", "t", "n1", 0, 0, "error", "boom", "tb")
    return {
        "shoal.Client": lambda: shoal.Client("http://127.0.0.1:9", "secret-token"),
        "shoal.CodecError": lambda: shoal.CodecError("cannot encode", code="codec.unsupported"),
        "shoal.Condition": lambda: shoal.Condition.RESULT,
        "shoal.InvokeError": lambda: shoal.InvokeError(
            "world.invoke('t') failed", alias="t", failures=[{"node_id": "n1"}]
        ),
        "shoal.NetworkDriver": lambda: shoal.NetworkDriver.OVERLAY,
        "shoal.Module": lambda: module,
        "shoal.Plan": lambda: _one_run()[0].plan,
        "shoal.PlanError": lambda: shoal.PlanError("bad plan", code="plan.json"),
        "shoal.Problem": lambda: problem,
        "shoal.ShoalError": lambda: shoal.ShoalError("oops", code="shoal", hint="retry"),
        "shoal.ShoalWarning": lambda: shoal.ShoalWarning("careful"),
        "shoal.SimulationRun": lambda: _one_run()[0],
        "shoal.Swarm": shoal.Swarm,
        "shoal.SwarmValidationError": lambda: shoal.SwarmValidationError("s", [problem]),
        "shoal.SwarmFailedError": lambda: shoal.SwarmFailedError("s", "boom", [failure]),
        "shoal.Task": lambda: shoal.Task(module, alias="t"),
        "shoal.FailureRecord": lambda: failure,
        "shoal.LogRecord": lambda: shoal.LogRecord(1, "n1", "t", 0, "s/0/t/0/0", "info", "hi", 1.0),
        "shoal.MetricRecord": lambda: shoal.MetricRecord("loss", 0.5, 0, "n1", "t", 0, 1.0),
        "shoal.NodeProfile": lambda: shoal.NodeProfile(count=2, gpus=1, memory="16Gi"),
        "shoal.NodeRecord": lambda: shoal.NodeRecord("n1", True, ("d",), False, None, 1.0, 0),
        "shoal.SwarmStatus": lambda: shoal.SwarmStatus(
            "s",
            "demo",
            "failed",
            0,
            "boom",
            1.0,
            failures=(failure,),
            tasks={"t": shoal.TaskCounts(1, 0, 0, 1)},
        ),
        "shoal.SwarmSummary": lambda: shoal.SwarmSummary("s", "demo", "running", 0, "", 1.0),
        "shoal.TaskCounts": lambda: shoal.TaskCounts(1, 0, 1, 0),
        "shoal.testing.Fault": lambda: shoal.testing.Fault("crash", node="node-00000"),
        "shoal.testing.Federation": shoal.testing.Federation,
        "shoal.testing.VirtualClock": shoal.testing.VirtualClock,
        **_strategy_instances(),
        **_steps_instances(),
    }


def _steps_instances() -> dict[str, Callable[[], object]]:
    sp = shoal.steps
    count = sp.CountEstimator(query=sp.QueryFeature("x") < 1)
    art = count.artifact("t")
    est: dict[str, Callable[[], object]] = {
        "Aggregate": lambda: sp.Aggregate(estimator=count),
        "And": lambda: sp.QueryFeature("x").isnull() & (sp.QueryFeature("y") > 1),
        "Artifact": lambda: art,
        "Compare": lambda: sp.QueryFeature("x") < 1,
        "DP": lambda: sp.DP(epsilon=1.0, lower=0, upper=1),
        "Estimate": lambda: sp.Estimate(estimator=count),
        "Finalize": lambda: art.steps[1],
        "GroupCountEstimator": lambda: sp.GroupCountEstimator(by="g"),
        "GroupMeanEstimator": lambda: sp.GroupMeanEstimator(by="g", feature="x"),
        "HistogramEstimator": lambda: sp.HistogramEstimator(feature="x", edges=[0, 1]),
        "Initialize": lambda: sp.Initialize(operation=sp.Operation()),
        "IsIn": lambda: sp.QueryFeature("x").isin([1]),
        "IsNull": lambda: sp.QueryFeature("x").isnull(),
        "Iterate": lambda: sp.Iterate(2, [art.steps[0]]),
        "MeanEstimator": lambda: sp.MeanEstimator(feature="x"),
        "Not": lambda: sp.QueryFeature("x").notnull(),
        "Or": lambda: (sp.QueryFeature("x") < 1) | (sp.QueryFeature("x") > 2),
        "Parallel": lambda: art.steps[0],
        "QuantileEstimator": lambda: sp.QuantileEstimator(feature="x", q=0.5, low=0, high=1),
        "QueryFeature": lambda: sp.QueryFeature("x"),
        "RoundRobin": lambda: sp.RoundRobin(operation=sp.Operation()),
        "SecureAdd": lambda: sp.SecureAdd(estimator=count),
        "SecureAdvertise": lambda: sp.SecureAdvertise(estimator=count),
        "SecureFinish": lambda: sp.SecureFinish(estimator=count),
        "SecureStart": lambda: sp.SecureStart(estimator=count),
        "Select": lambda: sp.Select(columns=["x"]),
        "Sequential": lambda: sp.Sequential(operation=sp.Operation()),
        "Step": lambda: sp.Step(operation=sp.Operation()),
        "StepsError": lambda: sp.StepsError("bad"),
        "SumEstimator": lambda: sp.SumEstimator(feature="x"),
        "VarianceEstimator": lambda: sp.VarianceEstimator(feature="x"),
    }
    rf = sp.FederatedRandomForestClassifier(n_estimators=2)
    scaler = sp.FederatedStandardScaler(features_in=["x"])
    train = sp.Train(sp.QueryFeature("x") < 1, model=rf, label="y")
    est.update(
        {
            "Aggregation": lambda: sp.Aggregation(model=rf),
            "Evaluate": sp.Evaluate,
            "FitTransformers": lambda: sp.FitTransformers(query=sp.Query().add(scaler)),
            "LocalCrossValidation": lambda: sp.LocalCrossValidation(model=rf, label="y"),
            "MergeMetrics": sp.MergeMetrics,
            "MergeTransformers": lambda: sp.MergeTransformers(query=sp.Query().add(scaler)),
            "ModelOperation": lambda: train,
            "Train": lambda: train,
            "TrainTest": lambda: sp.TrainTest(trainer=train),
            "TrainedModel": lambda: sp.TrainedModel(rf, {}, label="y"),
            "Transform": lambda: sp.Transform(transformer=scaler),
            "FederatedBinarizer": lambda: sp.FederatedBinarizer(features_in=["x"]),
            "FederatedClamp": lambda: sp.FederatedClamp(features_in=["x"], max_value=1.0),
            "FederatedDrop": lambda: sp.FederatedDrop(features_in=["x"]),
            "FederatedFilter": lambda: sp.FederatedFilter(features_in="x", operation=">", value=0),
            "FederatedKBinsDiscretizer": lambda: sp.FederatedKBinsDiscretizer(features_in=["x"]),
            "FederatedLabelBinarizer": lambda: sp.FederatedLabelBinarizer(features_in=["y"]),
            "FederatedLinearRegression": sp.FederatedLinearRegression,
            "FederatedLogisticRegression": lambda: sp.FederatedLogisticRegression(classes=[0, 1]),
            "FederatedMinMaxScaler": lambda: sp.FederatedMinMaxScaler(features_in=["x"]),
            "FederatedOneHotEncoder": lambda: sp.FederatedOneHotEncoder(features_in=["g"]),
            "FederatedPipeline": lambda: sp.FederatedPipeline(stages=[scaler]),
            "FederatedRandomForestClassifier": lambda: rf,
            "FederatedRename": lambda: sp.FederatedRename(features_in=["x"], features_out=["z"]),
            "FederatedSimpleImputer": lambda: sp.FederatedSimpleImputer(features_in=["x"]),
            "FederatedSplitter": sp.FederatedSplitter,
            "FederatedStandardScaler": lambda: scaler,
            "FederatedTransformer": lambda: scaler,
            "Model": lambda: rf,
            "StrategyRandomForestClassifier": lambda: sp.StrategyRandomForestClassifier.MERGE,
        }
    )
    for name in (
        "Arrange",
        "Collect",
        "Distribute",
        "Distribution",
        "Entity",
        "Environment",
        "Estimator",
        "Operation",
        "Query",
        "QueryFilter",
        "CountEstimator",
        "Metadata",
        "CollectMetadata",
    ):
        est[name] = getattr(sp, name)
    return {f"shoal.steps.{k}": v for k, v in est.items()}


def _strategy_instances() -> dict[str, Callable[[], object]]:
    import numpy as np

    st = shoal.strategies
    make: dict[str, Callable[[], object]] = {
        f"shoal.strategies.{c.__name__}": c
        for c in (
            st.Bulyan,
            st.DPFedAvg,
            st.FedAdagrad,
            st.FedAdam,
            st.FedAvg,
            st.FedAvgM,
            st.FedProx,
            st.FedYogi,
            st.Krum,
            st.Median,
            st.MultiKrum,
            st.Scaffold,
            st.Strategy,
            st.TrimmedMean,
        )
    }
    vec, layout = st.flatten({"w": np.zeros(2)})
    make["shoal.strategies.ClientUpdate"] = lambda: st.ClientUpdate(np.zeros(2), 3)
    make["shoal.strategies.Layout"] = lambda: layout
    make["shoal.strategies.SecureFedAvg"] = st.SecureFedAvg
    make["shoal.strategies.SecureTasks"] = lambda: st.SecureFedAvg().tasks(
        shoal.Swarm(), datasets=["d"]
    )
    make["shoal.strategies.LocalRound"] = lambda: st.LocalRound(layout, vec, 0)
    pv = shoal.privacy
    make["shoal.privacy.Charge"] = lambda: pv.Charge("gaussian", 1.0)
    make["shoal.privacy.Gaussian"] = lambda: pv.Gaussian(sigma=1.0)
    make["shoal.privacy.Laplace"] = lambda: pv.Laplace(1.0)
    make["shoal.privacy.DPNoise"] = lambda: pv.DPNoise(1.0, 1.0)
    make["shoal.privacy.ExcludeVars"] = lambda: pv.ExcludeVars(("b",))
    make["shoal.privacy.PercentilePrivacy"] = pv.PercentilePrivacy
    make["shoal.privacy.Quantize"] = pv.Quantize
    make.update(_job_instances())
    return make


def _job_instances() -> dict[str, Callable[[], object]]:
    import numpy as np

    jb = shoal.job
    cl = shoal.job.client
    return {
        "shoal.job.Controller": jb.Controller,
        "shoal.job.ExcludeVars": jb.ExcludeVars,
        "shoal.job.Executor": jb.Executor,
        "shoal.job.FedAvg": jb.FedAvg,
        "shoal.job.FedAvgJob": lambda: jb.FedJob("j"),  # needs torch; FedJob's repr
        "shoal.job.FedJob": lambda: jb.FedJob("j"),
        "shoal.job.FedOpt": jb.FedOpt,
        "shoal.job.Filter": jb.Filter,
        "shoal.job.FilterType": lambda: jb.FilterType.TASK_DATA,
        "shoal.job.IntimeModelSelector": jb.IntimeModelSelector,
        "shoal.job.JobCtx": lambda: jb.JobCtx("server"),
        "shoal.job.ModelController": jb.ModelController,
        "shoal.job.ModelDequantizer": jb.ModelDequantizer,
        "shoal.job.ModelPersistor": lambda: jb.ModelPersistor({}, "numpy"),
        "shoal.job.ModelQuantizer": jb.ModelQuantizer,
        "shoal.job.NPModel": lambda: jb.NPModel({"w": np.zeros(1)}),
        "shoal.job.PTModel": lambda: jb.NPModel({"w": np.zeros(1)}),
        "shoal.job.PercentilePrivacy": jb.PercentilePrivacy,
        "shoal.job.ScriptRunner": lambda: jb.ScriptRunner("t.py"),
        "shoal.job.CrossSiteEval": jb.CrossSiteEval,
        "shoal.job.CrossSiteModelEval": jb.CrossSiteModelEval,
        "shoal.job.Cyclic": jb.Cyclic,
        "shoal.job.FLContext": lambda: jb.FLContext("site-1", "j"),
        "shoal.job.Signal": jb.Signal,
        "shoal.job.client.AnalyticsDataType": lambda: cl.AnalyticsDataType.SCALAR,
        "shoal.job.client.FLModel": cl.FLModel,
        "shoal.job.client.ParamsType": lambda: cl.ParamsType.FULL,
    }


def test_reprs_of_public_objects_do_not_name_private_modules() -> None:
    make = _instances()
    _, task_side = _one_run()  # shoal.runtime's objects, as task code sees them
    reprs = {f"shoal.runtime.{name}": text for name, text in task_side.items()}
    for module in PUBLIC:
        for _, obj in exported(module):
            key = f"{module.__name__}.{obj.__qualname__}"
            if not inspect.isclass(obj) or key in reprs:
                continue
            assert key in make, f"add a way to make a {key} to _instances() in {__file__}"
            reprs[key] = repr(make[key]())
    assert {k.rsplit(".", 1)[0] for k in reprs} == {m.__name__ for m in PUBLIC}
    for key, text in reprs.items():
        assert "shoal._" not in text, (key, text)
        assert "secret-token" not in text, key
    assert reprs["shoal.runtime.World"].startswith("<shoal.runtime.World object")
    assert reprs["shoal.Swarm"].startswith("<shoal.Swarm object")


def test_private_module_names() -> None:
    assert is_private("shoal._define.task") and is_private("shoal.runtime._x")
    assert not is_private("shoal") and not is_private("shoal.runtime")
    assert not is_private("_other.module")


def test_import_shoal_stays_light() -> None:
    # Every simulator worker imports shoal: the lazy exports must stay lazy.
    code = (
        "import sys, shoal\n"
        "heavy = {'pydantic', 'numpy', 'httpx', 'shoal._sim', 'shoal._plan', 'shoal._client'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    "first", ["import shoal.testing", "import shoal; shoal.simulate"], ids=["testing", "simulate"]
)
def test_a_lazy_export_shows_its_public_module_once_something_loaded_it(first: str) -> None:
    # SimulationRun is what Federation.run and simulate() return, before any use of
    # shoal.SimulationRun itself.
    code = f"{first}\nimport sys\nprint(sys.modules['shoal._sim.run'].SimulationRun.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "shoal"


def test_secure_aggregation_parameters_of_the_job_dialect() -> None:
    # The job dialect's secure FedAvg (docs/job.md) and the placement by node ids it
    # uses from shoal.strategies: deliberate public parameters.
    fedavg = inspect.signature(shoal.job.FedAvg).parameters
    assert fedavg["secure"].default is False
    assert "secure" not in inspect.signature(shoal.job.FedOpt).parameters
    tasks = inspect.signature(shoal.strategies.SecureFedAvg.tasks).parameters
    assert [p for p in tasks if tasks[p].kind is inspect.Parameter.KEYWORD_ONLY] == [
        "datasets",
        "sites",
        "server",
        "key",
        "worker",
        "prefix",
    ]
