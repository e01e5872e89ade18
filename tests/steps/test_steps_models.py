"""Models and transformers as steps, end to end in the simulator: the federated fit of a
query's transformers, FedAvg over ``Iterate`` followed by more steps, TrainTest with
Aggregation and Evaluate, LocalCrossValidation (docs/steps.md "Models")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, StandardScaler

import shoal
from shoal import NodeProfile
from shoal._steps import learn as L
from shoal.steps import (
    Aggregation,
    Artifact,
    Collect,
    Distribute,
    Evaluate,
    FederatedLogisticRegression,
    FederatedMinMaxScaler,
    FederatedPipeline,
    FederatedRandomForestClassifier,
    FederatedSimpleImputer,
    FederatedSplitter,
    FederatedStandardScaler,
    Finalize,
    Iterate,
    LocalCrossValidation,
    MeanEstimator,
    MergeMetrics,
    Parallel,
    Query,
    QueryFeature,
    StepsError,
    Train,
    TrainedModel,
    TrainTest,
    to_swarm,
)

pytestmark = pytest.mark.timeout(180)

FEATURES = ["mean_radius", "mean_texture", "worst_area", "worst_smoothness", "mean_symmetry"]


def _table() -> pd.DataFrame:
    """Five breast cancer columns, about 10% of three of them missing."""
    df = load_breast_cancer(as_frame=True).frame
    df = df.rename(columns=lambda c: str(c).replace(" ", "_"))[[*FEATURES, "target"]]
    rng = np.random.default_rng(1)
    for c in FEATURES[2:]:
        df.loc[rng.random(len(df)) < 0.1, c] = np.nan
    return df


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _table()


def _nodes(tmp_path: Path, df: pd.DataFrame, n: int = 3) -> tuple[list[NodeProfile], list[Any]]:
    """``df`` cut into ``n`` uneven parts, one CSV per node."""
    rows = np.random.default_rng(0).permutation(len(df))
    cuts = [int(len(df) * s) for s in (0.2, 0.5)][: n - 1]
    frames = [df.iloc[part].reset_index(drop=True) for part in np.split(rows, cuts)]
    nodes = []
    for i, frame in enumerate(frames):
        path = tmp_path / f"n{i}.csv"
        frame.to_csv(path, index=False)
        nodes.append(NodeProfile(name=f"n{i}", datasets={"t": path}))
    # What the node reads back (the CSV round trip), for the pooled references.
    return nodes, [pd.read_csv(tmp_path / f"n{i}.csv") for i in range(len(frames))]


def _pipeline() -> FederatedPipeline:
    return FederatedPipeline(
        stages=[
            FederatedSimpleImputer(features_in=FEATURES, strategy="mean"),
            FederatedStandardScaler(features_in=FEATURES),
            FederatedMinMaxScaler(features_in=FEATURES),
        ]
    )


def _simulate(artifact: Artifact, nodes: list[NodeProfile]) -> dict[str, Any]:
    run = shoal.simulate(artifact, nodes=nodes, executor="inline")
    assert run.ok, run.reason
    return dict(run.globals)


def test_transformers_fitted_by_steps_equal_pooled_sklearn(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    """The fit inserted before Train gives every node sklearn's pooled transform, fitted
    on the rows the query's filter keeps (the filter applies to models too)."""
    nodes, frames = _nodes(tmp_path, table)
    query = Query().filter(QueryFeature("mean_radius") < 20).add(_pipeline())
    model = FederatedLogisticRegression(classes=[0, 1], local_epochs=1)
    artifact = Artifact(
        steps=[
            Parallel(Train(query, model=model, label="target"), Collect()),
            Finalize(Aggregation(model=model)),
        ],
        dataset="t",
    )
    # The compiler inserted one fit and one merge step per round (3 stages, 1 round each).
    assert len(to_swarm(artifact).step_tasks) == 2 + 2 * 3

    trained = TrainedModel.loads(_simulate(artifact, nodes)["model"])
    pooled = pd.concat(frames, ignore_index=True)
    pooled = pooled[pooled.mean_radius < 20]
    imp = SimpleImputer().fit(pooled[FEATURES])
    std = StandardScaler().fit(imp.transform(pooled[FEATURES]))
    mm = MinMaxScaler().fit(std.transform(imp.transform(pooled[FEATURES])))
    assert trained.fitted is not None
    _, state = trained.fitted["stages"]  # the filter's (empty) state, the pipeline's
    s_imp, s_std, s_mm = state["stages"]
    np.testing.assert_allclose(s_imp["statistics"], imp.statistics_, rtol=1e-12)
    np.testing.assert_allclose(s_std["mean"], std.mean_, rtol=1e-12)
    np.testing.assert_allclose(s_std["scale"], std.scale_, rtol=1e-12)
    np.testing.assert_allclose(s_mm["data_min"], mm.data_min_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s_mm["data_max"], mm.data_max_, rtol=1e-9, atol=1e-12)
    # The model's own query prepares raw rows exactly as sklearn's pooled pipeline does.
    np.testing.assert_allclose(
        trained.frame(pooled)[FEATURES].to_numpy(),
        mm.transform(std.transform(imp.transform(pooled[FEATURES]))),
        atol=1e-9,
    )


def test_fedavg_over_iterate_then_more_steps(tmp_path: Path, table: pd.DataFrame) -> None:
    """Each pass starts from the model the pass before aggregated (the fit repeats at the
    start of each pass); the steps after the loop evaluate the last pass's model. The
    model equals the FedAvg protocol run by hand on the transformed rows."""
    nodes, frames = _nodes(tmp_path, table)
    query = Query().add(_pipeline())
    splitter = FederatedSplitter(test_percentage=0.3, random_state=0, stratify="target")
    model = FederatedLogisticRegression(classes=[0, 1], learning_rate=0.5, local_epochs=2)

    def artifact(passes: int) -> Artifact:
        train = TrainTest(query, model=model, label="target", splitter=splitter)
        return Artifact(
            steps=[
                Iterate(
                    passes,
                    [Parallel(train, Collect()), Finalize(Aggregation(model=model), Distribute())],
                ),
                Parallel(Evaluate(split="test"), Collect()),
                Finalize(MergeMetrics()),
            ],
            dataset="t",
        )

    out = _simulate(artifact(3), nodes)
    trained = TrainedModel.loads(out["model"])

    # By hand: the same transform on every node, three rounds of local training + FedAvg.
    prepared = [trained.frame(f) for f in frames]
    op = L.TrainTest(model=model, label="target", splitter=splitter)
    params = None
    for _ in range(3):
        updates = [op.local(df, params, salt=n.name) for df, n in zip(prepared, nodes, strict=True)]
        params = model.aggregate(updates)
    assert params is not None
    np.testing.assert_allclose(trained.params["coef"], params["coef"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(trained.params["intercept"], params["intercept"], rtol=1e-9)

    # The steps after the Iterate: every node's test split, pooled, equals the model's
    # metrics on the union of those splits.
    tests = [splitter.split(df, salt=n.name)[1] for df, n in zip(prepared, nodes, strict=True)]
    union = pd.concat(tests, ignore_index=True)
    assert out["metrics"]["n"] == len(union)
    assert out["metrics"]["accuracy"] == pytest.approx(trained.metrics(union)["accuracy"])

    # One pass gives another model: the passes do build on each other.
    one = TrainedModel.loads(_simulate(artifact(1), nodes)["model"])
    assert not np.allclose(one.params["coef"], trained.params["coef"])


@pytest.mark.parametrize("strategy", ["MERGE", "MAJORITY_VOTE"])
def test_random_forest_train_test_aggregate_evaluate(
    tmp_path: Path, table: pd.DataFrame, strategy: str
) -> None:
    nodes, frames = _nodes(tmp_path, table)
    query = Query().add(_pipeline())
    splitter = FederatedSplitter(test_percentage=0.3, random_state=0, stratify="target")
    forest = FederatedRandomForestClassifier(n_estimators=10, strategy=strategy)
    artifact = Artifact(
        steps=[
            Parallel(TrainTest(query, model=forest, label="target", splitter=splitter), Collect()),
            Finalize(Aggregation(model=forest), Distribute()),
            Parallel(Evaluate(), Collect()),
            Finalize(MergeMetrics()),
        ],
        dataset="t",
    )
    out = _simulate(artifact, nodes)
    trained = TrainedModel.loads(out["model"])
    assert len(trained.params["forests"]) == (1 if strategy == "MERGE" else len(nodes))
    tests = [
        splitter.split(trained.frame(f), salt=n.name)[1] for f, n in zip(frames, nodes, strict=True)
    ]
    union = pd.concat(tests, ignore_index=True)
    assert out["metrics"]["accuracy"] == pytest.approx(trained.metrics(union)["accuracy"])
    assert out["metrics"]["accuracy"] > 0.8
    assert out["local_metrics"]["n"] == len(union)  # each node's own model, its test split
    # The model travels as codec bytes and predicts raw rows (the query prepares them).
    again = TrainedModel.load(trained.save(tmp_path / "model.bin"))
    np.testing.assert_array_equal(again.classify(frames[0]), trained.classify(frames[0]))


def test_local_cross_validation_returns_k_fold_metrics(tmp_path: Path, table: pd.DataFrame) -> None:
    nodes, frames = _nodes(tmp_path, table)
    forest = FederatedRandomForestClassifier(n_estimators=10)
    cv_op = LocalCrossValidation(Query().add(_pipeline()), model=forest, label="target", folds=4)
    artifact = Artifact(
        steps=[Parallel(cv_op, Collect()), Finalize(MergeMetrics())],
        dataset="t",
    )
    cv = _simulate(artifact, nodes)["cv"]
    assert sorted(cv) == [n.name for n in nodes]
    for frame, node in zip(frames, nodes, strict=True):
        folds = cv[node.name]["folds"]
        assert len(folds) == 4
        assert sum(f["n"] for f in folds) == len(frame)  # every row tested exactly once
        assert cv[node.name]["mean"]["accuracy"] == pytest.approx(
            np.mean([f["accuracy"] for f in folds])
        )


def test_a_transformer_outside_a_model_operation_is_refused(table: pd.DataFrame) -> None:
    scaled = Query().add(FederatedStandardScaler(features_in=["mean_radius"]))
    artifact = MeanEstimator(feature="mean_radius", query=scaled).artifact(dataset="t")
    with pytest.raises(StepsError, match="only a model operation fits") as info:
        to_swarm(artifact)
    assert info.value.code == "steps.unsupported"


def test_bytes_that_are_not_a_model_are_refused() -> None:
    with pytest.raises(StepsError, match="not a model") as info:
        TrainedModel.loads(b"not a model")
    assert info.value.code == "steps.model"
