"""Models and transformers as steps: model operations, evaluation, federated fitting.

The operations wrap :mod:`shoal._steps.learn` (DESIGN.md 3b):

- ``Train`` / ``TrainTest`` / ``LocalCrossValidation`` run on every node (``Parallel``):
  they apply their query (filters, then the transformers with the federated fit) and
  publish an ``"update"`` (the model's ``train``), ``"local_metrics"`` (TrainTest: the
  node's own model on its test split) or ``"cv"`` (k fold metrics);
- ``Aggregation`` runs on the initiator (``Finalize``): every update into one model,
  published as ``"model"``: the bytes of a :class:`TrainedModel` (model, parameters,
  the query with its fitted transform, label and features; shoal's codec, no pickle);
- ``Evaluate`` runs the received model on every node's test split (``"metrics"``) and
  ``MergeMetrics`` pools them on the initiator (confusion matrices summed: exact).

A query holding transformers is fitted federatedly by ordinary steps that
:func:`fit_steps` inserts before the step using it, one pair per round of the fit:
``Parallel(FitTransformers, Collect())`` (each node's statistics, never rows) then
``Initialize(MergeTransformers, Distribute())`` (the merged state back to every node).
The products of the step before them travel through these steps unchanged
(``"__carried__"``), so inserting them changes nothing else the artifact sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from shoal import _codec
from shoal._errors import CodecError
from shoal._steps._artifact import (
    Artifact,
    Collect,
    Distribute,
    Initialize,
    Iterate,
    Parallel,
)
from shoal._steps._entity import DUMP, LOAD, Entity, StepsError
from shoal._steps._operation import Environment, Operation
from shoal._steps._query import LEARN_DUMP, LEARN_LOAD, Query, QueryFilter, Transform, as_query
from shoal._steps.learn import _metrics
from shoal._steps.learn import _operations as lo
from shoal._steps.learn._base import LearnEntity, State
from shoal._steps.learn._model import Model, Params
from shoal._steps.learn._pipeline import FederatedSplitter

FITTED = "__fitted__"
"""The product holding a query's fitted (or partially fitted) state."""
CARRIED = "__carried__"
"""The product carrying the resources of the step before the inserted fitting steps."""
STATS = "__fit_stats__"
"""A node's statistics for one round of a query's fit."""

_FORMAT = "shoal.steps.model/1"

_Model = Annotated[Model, LEARN_LOAD, LEARN_DUMP]
_Splitter = Annotated[FederatedSplitter, LEARN_LOAD, LEARN_DUMP]
_Query = Annotated[Query | None, LOAD, DUMP]


def _one(by_node: dict[str, Any] | None) -> Any:
    """The value of the first sender (every sender sent the same one), or None."""
    if not by_node:
        return None
    return by_node[sorted(by_node)[0]]


def _same(values: Sequence[Any]) -> bool:
    encoded = {_codec.encode(v) for v in values}
    return len(encoded) <= 1


class TrainedModel:
    """A model as trained by an artifact: what the user gets back.

    Holds the model (its hyper-parameters), the learned ``params`` and how its input was
    prepared: the ``query`` with its federatedly ``fitted`` transform, the ``label`` and
    the ``features``. :meth:`predict` and :meth:`classify` prepare raw rows the same way
    (the query's transformers, not its row filters: one prediction per row given).

    ``Aggregation`` publishes ``TrainedModel.dumps()`` as the global ``"model"``::

        model = TrainedModel.loads(run.globals["model"])
        model.classify(df)            # labels for the rows of df
        model.eval(df)                # metrics on df (its label column), filters applied

    Parameters
    ----------
    model
        The model (its hyper-parameters).
    params
        What ``model.aggregate`` returned: the learned parameters.
    query
        The query the nodes applied before training, or None.
    fitted
        The query's federatedly fitted state (None: no transformer).
    label
        The target column.
    features
        The feature columns; None: every column but the label.
    splitter
        The train/test splitter the nodes used (``Evaluate(split="test")`` reuses it).
    """

    def __init__(
        self,
        model: Model,
        params: Params,
        query: Query | None = None,
        fitted: State | None = None,
        label: str | None = None,
        features: list[str] | None = None,
        splitter: FederatedSplitter | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.query = query
        self.fitted = fitted
        self.label = label
        self.features = features
        self.splitter = splitter

    def __repr__(self) -> str:
        return f"TrainedModel({type(self.model).__name__}, label={self.label!r})"

    def frame(self, df: Any, keep_rows: bool = True) -> Any:
        """``df`` through the query (its fitted transform; its filters unless ``keep_rows``)."""
        return df if self.query is None else self.query.apply(df, self.fitted, keep_rows)

    def _x(self, df: Any) -> Any:
        cols = self.features or [c for c in df.columns if c != self.label]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise StepsError(
                f"the model's features {missing} are not in the data; it has {list(df.columns)}",
                code="steps.column",
                hint="give rows with every column the model was trained on",
            )
        return df[cols]

    def predict(self, df: Any) -> np.ndarray[Any, Any]:
        """Class probabilities (a classifier) or values (a regressor), one row per row."""
        return self.model.predict(self._x(self.frame(df)), self.params)

    def classify(self, df: Any) -> np.ndarray[Any, Any]:
        """The predicted label of each row."""
        return self.model.classify(self._x(self.frame(df)), self.params)

    def eval(self, df: Any) -> dict[str, Any]:
        """Metrics on ``df`` (which has the label column), the query's filters applied."""
        return self.metrics(self.frame(df, keep_rows=False))

    def metrics(self, data: Any) -> dict[str, Any]:
        """Metrics on rows already through the query (:meth:`frame`)."""
        if self.label is None or self.label not in data.columns:
            raise StepsError(
                f"eval needs the label column {self.label!r}; the data has {list(data.columns)}",
                code="steps.column",
                hint="give rows with the label column",
            )
        return self.model.eval(self._x(data), data[self.label].to_numpy(), self.params)

    def dumps(self) -> bytes:
        """The model as codec bytes (never pickle)."""
        return _codec.encode(
            {
                "format": _FORMAT,
                "model": self.model.spec(),
                "params": self.params,
                "query": None if self.query is None else self.query.spec(),
                "fitted": self.fitted,
                "label": self.label,
                "features": self.features,
                "splitter": None if self.splitter is None else self.splitter.spec(),
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write :meth:`dumps` to ``path``; returns the path."""
        p = Path(path)
        p.write_bytes(self.dumps())
        return p

    @staticmethod
    def loads(data: bytes) -> TrainedModel:
        """The model :meth:`dumps` wrote (e.g. an artifact's global ``"model"``)."""
        doc = None
        if isinstance(data, bytes | bytearray | memoryview):
            try:
                doc = _codec.decode(data)
            except CodecError:
                doc = None  # refused below, with the fix
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise StepsError(
                "these bytes are not a model that an artifact's Aggregation wrote",
                code="steps.model",
                hint="load the global 'model' of a run (or a file TrainedModel.save wrote)",
            )
        model = LearnEntity.from_spec(doc["model"])
        if not isinstance(model, Model):
            raise StepsError(f"{doc['model'].get('kind')} is not a model", code="steps.model")
        query = None if doc["query"] is None else Entity.from_spec(doc["query"])
        splitter = None if doc["splitter"] is None else LearnEntity.from_spec(doc["splitter"])
        return TrainedModel(
            model,
            doc["params"],
            query if isinstance(query, Query) else None,
            doc["fitted"],
            doc["label"],
            doc["features"],
            splitter if isinstance(splitter, FederatedSplitter) else None,
        )

    @staticmethod
    def load(path: str | Path) -> TrainedModel:
        """The model :meth:`save` wrote to ``path``."""
        return TrainedModel.loads(Path(path).read_bytes())


def _unpack(env: Environment) -> State | None:
    """Undo the fitting steps' carrying; return the fitted state they sent (or None)."""
    fitted = _one(env.resources.get(FITTED))
    carried = _one(env.resources.get(CARRIED))
    if carried is not None:
        env.resources = dict(carried)
    else:
        env.resources.pop(FITTED, None)
    return fitted if isinstance(fitted, dict) else None


class ModelOperation(Operation):
    """Base of the model operations: a model, its query, label and features.

    Parameters
    ----------
    query
        A :class:`Query` (or one filter) applied on each node first; transformer stages
        are fitted on every node's data by steps the artifact inserts (positional, as in
        the seed: ``Train(query, model=..., label=...)``).
    model
        The federated model (``FederatedRandomForestClassifier``, ...).
    label
        The target column.
    features
        The feature columns after the query; None: every column but the label.
    """

    reads_data: ClassVar[bool] = True

    query: _Query = None
    model: _Model
    label: str
    features: list[str] | None = None

    def __init__(self, query: Query | QueryFilter | None = None, /, **data: Any) -> None:
        if query is not None:
            data["query"] = query
        super().__init__(**data)

    @field_validator("query", mode="before")
    @classmethod
    def _as_query(cls, value: Any) -> Any:
        return as_query(value) if isinstance(value, QueryFilter) else value

    def fit_query(self) -> Query | None:
        """The query, when its transformers need a federated fit (else None)."""
        q = self.query
        return q if q is not None and q.transformers() and q.pipeline().rounds() > 0 else None

    def prepare(self, env: Environment) -> tuple[Any, State | None, Params | None]:
        """The queried frame, the fitted state, and the global params received (if any)."""
        fitted = _unpack(env)
        df = env.df if self.query is None else self.query.apply(env.df, fitted)
        received = _one(env.resources.get("model"))
        params = None
        if received is not None:
            trained = TrainedModel.loads(received)
            if trained.model.kind() != self.model.kind():
                raise StepsError(
                    f"{type(self).__name__} trains a {type(self.model).__name__} but received "
                    f"a {type(trained.model).__name__} as 'model'",
                    code="steps.model",
                    hint="aggregate the same model that the nodes train",
                )
            params = trained.params
        return df, fitted, params

    def recipe(self, fitted: State | None) -> dict[str, Any]:
        """How the model's input was prepared (sent with the update to the aggregator)."""
        splitter = getattr(self, "splitter", None)
        return {
            "query": None if self.query is None else self.query.spec(),
            "fitted": fitted,
            "label": self.label,
            "features": self.features,
            "splitter": None if splitter is None else splitter.spec(),
        }


class Train(ModelOperation):
    """Every node trains on all its (queried) rows; products ``"update"``, ``"recipe"``.

    Starts from the ``"model"`` the previous step distributed, if any (FedAvg rounds).
    """

    def run(self, env: Environment) -> None:
        """Train on the local rows."""
        df, fitted, params = self.prepare(env)
        op = lo.Train(model=self.model, label=self.label, features=self.features)
        env.products["update"] = op.local(df, params)
        env.products["recipe"] = self.recipe(fitted)


class TrainTest(ModelOperation):
    """Every node trains on its train split and scores its own model on its test split.

    Products ``"update"``, ``"recipe"`` and ``"local_metrics"``. The split is the
    ``splitter``'s, seeded per node (its id is the salt). ``trainer=Train(...)`` (the
    seed's form) is accepted: its model, label, features and query are the defaults.

    Parameters
    ----------
    splitter
        How each node splits its queried rows into train and test (default: 20% test).
    trainer
        Optional, the seed's form: a :class:`Train` whose fields are the defaults.

    The other parameters are :class:`ModelOperation`'s.
    """

    splitter: _Splitter = Field(default_factory=FederatedSplitter)

    @model_validator(mode="before")
    @classmethod
    def _trainer(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("trainer") is None:
            return data
        data = dict(data)
        trainer = data.pop("trainer")
        if isinstance(trainer, dict):
            trainer = Entity.from_spec(trainer)
        if not isinstance(trainer, Train):
            raise StepsError(
                f"TrainTest(trainer={trainer!r}): not a Train operation",
                hint="give trainer=Train(model=..., label=...), or model= and label=",
            )
        for name in ("model", "label", "features", "query"):
            mine, theirs = data.get(name), getattr(trainer, name)
            if mine is None:
                data[name] = theirs
            elif theirs is not None and mine != theirs:
                raise StepsError(
                    f"TrainTest: {name}={mine!r} but its trainer has {name}={theirs!r}",
                    hint=f"give {name} once (on TrainTest or on its trainer)",
                )
        return data

    def run(self, env: Environment) -> None:
        """Train on the train split, score the node's model on its test split."""
        df, fitted, params = self.prepare(env)
        op = lo.TrainTest(
            model=self.model, label=self.label, features=self.features, splitter=self.splitter
        )
        out = op.run(df, params, salt=env.node)
        env.products["update"] = out["update"]
        env.products["local_metrics"] = out["metrics"]
        env.products["recipe"] = self.recipe(fitted)


class LocalCrossValidation(ModelOperation):
    """k fold cross-validation of local training on every node; product ``"cv"``.

    ``{"folds": [k metrics], "mean": {metric: mean over the folds}}`` per node; follow
    it with ``Collect()`` and ``Finalize(MergeMetrics())`` to get every node's.

    Parameters
    ----------
    folds
        k, the number of folds (each row is tested exactly once).
    stratified
        Keep the label's proportions in every fold (classifiers).
    random_state
        Seeds the fold assignment.

    The other parameters are :class:`ModelOperation`'s.
    """

    folds: int = 5
    stratified: bool = True
    random_state: int = 0

    def run(self, env: Environment) -> None:
        """Cross-validate on the local rows."""
        df, _, params = self.prepare(env)
        op = lo.LocalCrossValidation(
            model=self.model,
            label=self.label,
            features=self.features,
            folds=self.folds,
            stratified=self.stratified,
            random_state=self.random_state,
        )
        env.products["cv"] = op.local(df, params)


def _pool(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One set of metrics from every node's: exact for classification (summed counts)."""
    results = [r for r in results if r and r.get("n")]
    if not results:
        return {}
    if "confusion_matrix" in results[0]:
        return _metrics.merge_classification(results)
    n = np.asarray([r["n"] for r in results], dtype=np.float64)
    mse = float(np.average([r["mse"] for r in results], weights=n))
    return {
        "n": int(n.sum()),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(np.average([r["mae"] for r in results], weights=n)),
    }


class Aggregation(Operation):
    """On the initiator: every node's ``"update"`` into one model, product ``"model"``.

    ``"model"`` is :meth:`TrainedModel.dumps` (load it with :meth:`TrainedModel.loads`);
    with ``TrainTest`` before it, ``"local_metrics"`` pools the nodes' own-model scores.
    As a ``Finalize``, its products are the run's globals; add ``Distribute()`` to send
    the model on (to ``Evaluate``, or to the next round's ``Train``).

    Parameters
    ----------
    model
        The model the nodes trained (its ``aggregate`` merges their updates).
    """

    model: _Model

    def run(self, env: Environment) -> None:
        """Aggregate the updates."""
        updates = env.resource("update")
        if not updates:
            raise StepsError(
                "Aggregation received no 'update' from the step before it",
                hint="put Parallel(Train/TrainTest(...), Collect()) before Finalize(Aggregation)",
            )
        recipes = env.resource("recipe")
        if not _same([r.get("fitted") for r in recipes]):
            raise StepsError(
                "the nodes applied different transforms to their data",
                hint="fit the query's transformers in the artifact (a bug if they were)",
            )
        recipe = recipes[0] if recipes else {}
        params = self.model.aggregate(updates)
        query = Entity.from_spec(recipe["query"]) if recipe.get("query") else None
        splitter = LearnEntity.from_spec(recipe["splitter"]) if recipe.get("splitter") else None
        trained = TrainedModel(
            self.model,
            params,
            query if isinstance(query, Query) else None,
            recipe.get("fitted"),
            recipe.get("label"),
            recipe.get("features"),
            splitter if isinstance(splitter, FederatedSplitter) else None,
        )
        env.products["model"] = trained.dumps()
        local = env.resource("local_metrics")
        if local:
            env.products["local_metrics"] = _pool(local)


class Evaluate(Operation):
    """Every node scores the received ``"model"``; product ``"metrics"``.

    ``split="test"``: on the node's test split (the splitter the model was trained with;
    all rows if it had none), ``"all"``: on every (queried) row. The model's own query,
    with its fitted transform, prepares the rows.

    Parameters
    ----------
    split
        ``"test"`` or ``"all"``.
    """

    reads_data: ClassVar[bool] = True
    split: Literal["test", "all"] = "test"

    def run(self, env: Environment) -> None:
        """Score the model on the local rows."""
        _unpack(env)
        received = _one(env.resources.get("model"))
        if received is None:
            raise StepsError(
                "Evaluate received no 'model'",
                hint="put Finalize(Aggregation(...), Distribute()) before Parallel(Evaluate())",
            )
        trained = TrainedModel.loads(received)
        df = trained.frame(env.df, keep_rows=False)
        if self.split == "test" and trained.splitter is not None:
            _, df = trained.splitter.split(df, env.node)
        env.products["metrics"] = trained.metrics(df) if len(df) else {}


class MergeMetrics(Operation):
    """On the initiator: the nodes' metrics pooled (``"metrics"``, ``"local_metrics"``)
    and their cross-validations gathered (``"cv"``: ``{node: {"folds", "mean"}}``)."""

    def run(self, env: Environment) -> None:
        """Pool what arrived."""
        for name in ("metrics", "local_metrics"):
            if name in env.resources:
                env.products[name] = _pool(env.resource(name))
        if "cv" in env.resources:
            env.products["cv"] = dict(sorted(env.resources["cv"].items()))


class FitTransformers(Operation):
    """Inserted by the compiler: a node's statistics for one round of a query's fit."""

    reads_data: ClassVar[bool] = True
    query: Annotated[Query, LOAD, DUMP]
    carry: bool = False

    def run(self, env: Environment) -> None:
        """This round's statistics (aggregates, never rows)."""
        state = _one(env.resources.get(FITTED))
        if self.carry:
            carried = _one(env.resources.get(CARRIED))
            env.products[CARRIED] = carried if carried is not None else dict(env.resources)
        pipeline = self.query.pipeline()
        env.products[FITTED] = state
        env.products[STATS] = None if pipeline.done(state) else pipeline.local(env.df, state)


class MergeTransformers(Operation):
    """Inserted by the compiler: every node's statistics into the query's next state."""

    query: Annotated[Query, LOAD, DUMP]
    carry: bool = False

    def run(self, env: Environment) -> None:
        """Merge one round; the state goes back to every node."""
        state = _one(env.resources.get(FITTED))
        stats = [s for s in env.resource(STATS) if s is not None]
        pipeline = self.query.pipeline()
        env.products[FITTED] = state if pipeline.done(state) else pipeline.merge(stats, state)
        if self.carry:
            env.products[CARRIED] = _one(env.resources.get(CARRIED))


def _has_transform(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get("kind") == Transform.kind():
            return True
        return any(_has_transform(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_transform(v) for v in value)
    return False


def _with_fits(steps: list[Any], before: bool) -> list[Any]:
    """``steps`` with the fitting steps inserted; ``before``: a step precedes them."""
    out: list[Any] = []
    for step in steps:
        if isinstance(step, Iterate):
            # The fit runs inside the loop, at the start of every pass: a pass's first step
            # sees only the previous pass's products, so a state fitted once before the
            # loop would not reach pass 2. The statistics are the same each pass. Passes
            # after the first always have products to carry (the last inner step's).
            inner = _with_fits(step.steps, before=True)
            if inner != step.steps:
                step = Iterate(step.iterations, inner, until=step.until)
            out.append(step)
            continue
        op = getattr(step, "operation", None)
        query = op.fit_query() if isinstance(op, ModelOperation) else None
        if query is None:
            if op is not None and not isinstance(op, ModelOperation) and _has_transform(op.spec()):
                raise StepsError(
                    f"{type(op).__name__}'s query holds a transformer, which only a model "
                    "operation fits",
                    code="steps.unsupported",
                    hint="put transformers in the query of Train, TrainTest or "
                    "LocalCrossValidation; estimators read the columns as they are",
                )
            out.append(step)
            continue
        carry = before or bool(out)
        for _ in range(query.pipeline().rounds()):
            fit = FitTransformers(query=query, carry=carry)
            merge = MergeTransformers(query=query, carry=carry)
            out.append(Parallel(operation=fit, distribution=Collect()))
            out.append(Initialize(operation=merge, distribution=Distribute()))
        out.append(step)
    return out


def fit_steps(artifact: Artifact) -> Artifact:
    """The artifact with the fitting steps of its model operations' transformers inserted.

    Before each step whose operation's query holds transformers, one
    ``Parallel(FitTransformers, Collect())`` and ``Initialize(MergeTransformers,
    Distribute())`` pair per round of the fit (inside an ``Iterate``: at the start of
    each pass). An artifact without transformers is returned as it is.
    """
    steps = _with_fits(list(artifact.steps), before=False)
    if steps == list(artifact.steps):
        return artifact
    return Artifact(
        steps=steps,
        dataset=artifact.dataset,
        initiator=artifact.initiator,
        name=artifact.name,
    )
