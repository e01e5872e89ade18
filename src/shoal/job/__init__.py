"""The job dialect (seed 004): NVIDIA FLARE's job API on shoal.

A FLARE job ports by changing its import lines::

    from shoal.job import FedAvg, FedJob, IntimeModelSelector, PTModel, ScriptRunner

    job = FedJob(name="cifar10_fedavg")
    job.to_server(FedAvg(num_clients=2, num_rounds=2))
    job.to_server(PTModel(Net()))
    job.to_server(IntimeModelSelector(key_metric="accuracy"))
    job.to_clients(ScriptRunner(script="src/cifar10_fl.py", script_args="--data /d/site-{i}"))
    job.export_job("/tmp/jobs")

and training scripts write ``import shoal.job.client as flare``. See docs/job.md.
"""

from __future__ import annotations

from shoal._job import fed_job as _fed_job
from shoal._job.app import FilterType
from shoal._job.fed_job import FedJob, JobCtx
from shoal._job.filters import ExcludeVars, ModelDequantizer, ModelQuantizer, PercentilePrivacy
from shoal._job.objects import (
    Controller,
    Executor,
    FedAvg,
    FedOpt,
    Filter,
    IntimeModelSelector,
    ModelController,
    ModelPersistor,
    NPModel,
    PTModel,
    ScriptRunner,
)
from shoal._job.patterns import FedAvgJob
from shoal._job.script import FLContext, Signal
from shoal._job.workflows import CrossSiteEval, CrossSiteModelEval, Cyclic
from shoal._public import publish as _publish
from shoal.job._run import simulator_run as _simulator_run

__all__ = [
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
]
# workflows and the executor's context (appended on their own: keeps merges small)
__all__ += ["CrossSiteEval", "CrossSiteModelEval", "Cyclic", "FLContext", "Signal"]

_publish(__name__, globals(), __all__)
_fed_job.RUNNER = _simulator_run
