"""The steps dialect (seed 003): artifacts of steps, queries and estimators.

An :class:`Artifact` is JSON code-as-data: a list of steps, each an
:class:`Operation` and a distribution. It compiles to a Swarm of ready-made library
modules and runs like one::

    import shoal
    from shoal.steps import MeanEstimator, QueryFeature

    age = QueryFeature("age")
    artifact = MeanEstimator(feature="income", query=age >= 30).artifact(dataset="t")
    run = shoal.simulate(artifact, nodes=5, datasets={"t": "table.csv"})
    run.globals["result"]

Estimators take ``secure=True`` (a secure sum over a chain: no party sees another
node's statistics) and ``privacy=DP(...)`` (each node spends from its budget and noises
its statistics); docs/steps.md.

Models and transformers run as steps: ``Parallel(TrainTest(query, model=...,
label=...), Collect())`` then ``Finalize(Aggregation(model=...))``, whose global
``"model"`` :meth:`TrainedModel.loads` reads back. Transformers in a model operation's
query (``Query().add(FederatedPipeline(...))``) are fitted federatedly by steps the
compiler inserts: every node applies the same transform, computed from every node's
statistics.

User operations subclass :class:`Operation` in an ordinary top-level module that the
artifact bundles. ``Sequential`` compiles to an engine chain, ``RoundRobin`` to a ring
and ``Iterate`` to an inner loop (its steps repeated in passes, optionally until a metric
holds).
"""

from __future__ import annotations

from shoal._public import publish as _publish
from shoal._steps._artifact import (
    COMPILER as _COMPILER,
)
from shoal._steps._artifact import (
    Arrange,
    Artifact,
    Collect,
    Distribute,
    Distribution,
    Finalize,
    Initialize,
    Iterate,
    Parallel,
    RoundRobin,
    Sequential,
    Step,
)
from shoal._steps._dp import DP
from shoal._steps._entity import Entity, StepsError
from shoal._steps._estimators import (
    Aggregate,
    CountEstimator,
    Estimate,
    Estimator,
    GroupCountEstimator,
    GroupMeanEstimator,
    HistogramEstimator,
    MeanEstimator,
    QuantileEstimator,
    SumEstimator,
    VarianceEstimator,
)
from shoal._steps._learn_ops import (
    Aggregation,
    Evaluate,
    FitTransformers,
    LocalCrossValidation,
    MergeMetrics,
    MergeTransformers,
    ModelOperation,
    Train,
    TrainedModel,
    TrainTest,
)
from shoal._steps._metadata import (
    CollectMetadata,
    Metadata,
    frame_metadata,
    metadata_artifact,
    table_metadata,
)
from shoal._steps._operation import Environment, Operation
from shoal._steps._query import (
    And,
    Compare,
    IsIn,
    IsNull,
    Not,
    Or,
    Query,
    QueryFeature,
    QueryFilter,
    Select,
    Transform,
)
from shoal._steps._secure import SecureAdd, SecureAdvertise, SecureFinish, SecureStart
from shoal._steps.learn import (
    FederatedBinarizer,
    FederatedClamp,
    FederatedDrop,
    FederatedFilter,
    FederatedKBinsDiscretizer,
    FederatedLabelBinarizer,
    FederatedLinearRegression,
    FederatedLogisticRegression,
    FederatedMinMaxScaler,
    FederatedOneHotEncoder,
    FederatedPipeline,
    FederatedRandomForestClassifier,
    FederatedRename,
    FederatedSimpleImputer,
    FederatedSplitter,
    FederatedStandardScaler,
    FederatedTransformer,
    Model,
    StrategyRandomForestClassifier,
)
from shoal.steps._compile import to_swarm

if not _COMPILER:
    _COMPILER.append(to_swarm)

__all__ = [
    "DP",
    "Aggregate",
    "Aggregation",
    "And",
    "Arrange",
    "Artifact",
    "Collect",
    "CollectMetadata",
    "Compare",
    "CountEstimator",
    "Distribute",
    "Distribution",
    "Entity",
    "Environment",
    "Estimate",
    "Estimator",
    "Evaluate",
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
    "Finalize",
    "FitTransformers",
    "GroupCountEstimator",
    "GroupMeanEstimator",
    "HistogramEstimator",
    "Initialize",
    "IsIn",
    "IsNull",
    "Iterate",
    "LocalCrossValidation",
    "MeanEstimator",
    "MergeMetrics",
    "MergeTransformers",
    "Metadata",
    "Model",
    "ModelOperation",
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
    "StrategyRandomForestClassifier",
    "SumEstimator",
    "Train",
    "TrainTest",
    "TrainedModel",
    "Transform",
    "VarianceEstimator",
    "frame_metadata",
    "metadata_artifact",
    "table_metadata",
    "to_swarm",
]

_publish(__name__, globals(), __all__)
