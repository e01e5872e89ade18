"""Federated transformers and models: the library the steps dialect wraps (DESIGN 3b).

Dialect-independent and pure: every object is a pydantic model whose fields are its
JSON parameters (``spec()`` / ``LearnEntity.from_spec``), and every federated step is
split into what a node computes and sends (statistics or updates: numbers, lists, numpy
arrays, never rows) and what the aggregator computes from all of them:

- transformers: ``local(df, state) -> stats``, ``merge(stats_list, state) -> state``
  for ``rounds()`` rounds until ``done(state)``, then ``transform(df, state)`` on
  every node (``fit_federated`` runs the rounds in-process);
- models: ``train(X, y, params) -> update``, ``aggregate(updates, params) -> params``,
  ``predict``, ``classify``, ``eval``, ``save``/``load`` (codec, never pickle);
- model operations: ``Train``, ``TrainTest``, ``LocalCrossValidation``, ``Aggregation``.

pandas and scikit-learn are imported when used (``pip install 'shoal[steps]'``).
"""

from __future__ import annotations

from shoal._steps.learn._base import FederatedTransformer, LearnEntity, State, fit_federated
from shoal._steps.learn._binning import FederatedKBinsDiscretizer, FederatedSimpleImputer
from shoal._steps.learn._deps import LearnError
from shoal._steps.learn._encoders import FederatedLabelBinarizer, FederatedOneHotEncoder
from shoal._steps.learn._forest import (
    FederatedRandomForestClassifier,
    StrategyRandomForestClassifier,
)
from shoal._steps.learn._linear import FederatedLinearRegression, FederatedLogisticRegression
from shoal._steps.learn._metrics import classification, merge_classification, regression
from shoal._steps.learn._model import Model, Params, Update
from shoal._steps.learn._operations import (
    Aggregation,
    LocalCrossValidation,
    ModelOperation,
    Train,
    TrainTest,
)
from shoal._steps.learn._pipeline import FederatedPipeline, FederatedSplitter
from shoal._steps.learn._scalers import FederatedMinMaxScaler, FederatedStandardScaler
from shoal._steps.learn._stateless import (
    FederatedBinarizer,
    FederatedClamp,
    FederatedDrop,
    FederatedFilter,
    FederatedRename,
)

__all__ = [
    "Aggregation",
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
    "LearnEntity",
    "LearnError",
    "LocalCrossValidation",
    "Model",
    "ModelOperation",
    "Params",
    "State",
    "StrategyRandomForestClassifier",
    "Train",
    "TrainTest",
    "Update",
    "classification",
    "fit_federated",
    "merge_classification",
    "regression",
]
