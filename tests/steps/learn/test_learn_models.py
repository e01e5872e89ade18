"""Models trained by the federated protocol, simulated in-process: per-node calls, then merge.

Breast cancer split over 5 uneven nodes (the example's data). Each node keeps a
stratified, seeded test split; the pooled reference trains scikit-learn on the union of
the nodes' train splits.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import split
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from shoal import _codec
from shoal._steps import learn as L

pytestmark = pytest.mark.timeout(120)


def features(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != "target"]


def node_splits(nodes: list[pd.DataFrame], splitter: L.FederatedSplitter) -> Any:
    parts = [splitter.split(df, salt=f"node-{i}") for i, df in enumerate(nodes)]
    train = pd.concat([a for a, _ in parts], ignore_index=True)
    test = pd.concat([b for _, b in parts], ignore_index=True)
    return train, test


def federated(op: L.TrainTest, nodes: list[pd.DataFrame], rounds: int = 1) -> L.Params:
    """The protocol: every node's update from the global params, then the aggregation."""
    agg = L.Aggregation(model=op.model)
    params = None
    for _ in range(rounds):
        updates = [op.local(df, params, salt=f"node-{i}") for i, df in enumerate(nodes)]
        params = agg.merge(updates, params)
    assert params is not None
    return params


@pytest.mark.parametrize("strategy", ["MERGE", "MAJORITY_VOTE"])
@pytest.mark.parametrize("seed", [0, 5])
def test_random_forest_within_003_of_pooled(cancer: pd.DataFrame, strategy: str, seed: int) -> None:
    nodes = split(cancer)
    splitter = L.FederatedSplitter(test_percentage=0.3, random_state=seed, stratify="target")
    train, test = node_splits(nodes, splitter)
    cols = features(cancer)
    pooled = RandomForestClassifier(random_state=0).fit(train[cols].to_numpy(), train["target"])
    pooled_acc = pooled.score(test[cols].to_numpy(), test["target"])

    op = L.TrainTest(
        model=L.FederatedRandomForestClassifier(strategy=strategy), label="target",
        splitter=splitter,
    )  # fmt: skip
    params = federated(op, nodes)
    assert len(params["forests"]) == (1 if strategy == "MERGE" else 5)
    fed = op.model.eval(test[cols], test["target"], params)
    # Every node's evaluation of the global model on its own test split, pooled: the same.
    per_node = [op.evaluate(df, params, salt=f"node-{i}") for i, df in enumerate(nodes)]
    assert L.merge_classification(per_node)["accuracy"] == pytest.approx(fed["accuracy"])
    print(f"RF {strategy} seed {seed}: pooled {pooled_acc:.3f} federated {fed['accuracy']:.3f}")
    assert fed["accuracy"] >= pooled_acc - 0.03


def test_random_forest_predicts_what_the_sklearn_forest_predicts(cancer: pd.DataFrame) -> None:
    """A node's forest as plain arrays predicts scikit-learn's probabilities exactly."""
    node, cols = split(cancer)[4], features(cancer)
    model = L.FederatedRandomForestClassifier(n_estimators=25, random_state=3)
    params = model.aggregate([model.train(node[cols], node["target"])])
    ref = RandomForestClassifier(n_estimators=25, random_state=3).fit(
        node[cols].to_numpy(), node.target
    )
    np.testing.assert_array_equal(
        model.predict(cancer[cols], params), ref.predict_proba(cancer[cols].to_numpy())
    )


def test_random_forest_classes_only_some_nodes_have(wine: pd.DataFrame) -> None:
    ordered = wine.sort_values("target", kind="stable").reset_index(drop=True)
    nodes = [ordered.iloc[a:b] for a, b in [(0, 50), (50, 120), (120, 178)]]
    assert sorted(nodes[0].target.unique()) == [0]  # the first node sees one class
    cols = features(wine)
    for strategy in ("MERGE", "MAJORITY_VOTE"):
        model = L.FederatedRandomForestClassifier(n_estimators=20, strategy=strategy)
        params = model.aggregate([model.train(n[cols], n["target"]) for n in nodes])
        assert params["classes"] == [0, 1, 2]
        assert model.predict(wine[cols], params).shape == (len(wine), 3)
        assert set(model.classify(wine[cols], params).tolist()) <= {0, 1, 2}


def scaled(nodes: list[pd.DataFrame], cols: list[str]) -> list[pd.DataFrame]:
    scaler = L.FederatedStandardScaler(features_in=cols)
    fitted = L.fit_federated(scaler, nodes)
    return [scaler.transform(df, fitted) for df in nodes]


@pytest.mark.parametrize("seed", [0, 5])
def test_logistic_regression_fedavg_within_003_of_pooled(cancer: pd.DataFrame, seed: int) -> None:
    cols = features(cancer)
    nodes = scaled(split(cancer), cols)
    splitter = L.FederatedSplitter(test_percentage=0.3, random_state=seed, stratify="target")
    train, test = node_splits(nodes, splitter)
    pooled = LogisticRegression().fit(train[cols], train["target"])

    model = L.FederatedLogisticRegression(classes=[0, 1], learning_rate=0.5, local_epochs=5)
    params = federated(L.TrainTest(model=model, label="target", splitter=splitter), nodes, 30)
    train_acc = model.eval(train[cols], train["target"], params)["accuracy"]
    test_acc = model.eval(test[cols], test["target"], params)["accuracy"]
    ref_train, ref_test = (
        pooled.score(train[cols], train.target),
        pooled.score(test[cols], test.target),
    )
    print(f"LR seed {seed}: train {train_acc:.3f} (pooled {ref_train:.3f}), "
          f"test {test_acc:.3f} (pooled {ref_test:.3f})")  # fmt: skip
    assert train_acc >= ref_train - 0.03
    assert test_acc >= ref_test - 0.03


def test_fedavg_weights_updates_by_sample_count() -> None:
    model = L.FederatedLogisticRegression(classes=["a", "b"])
    updates = [
        {"coef": np.ones((2, 3)), "intercept": np.zeros(2), "n": 30},
        {"coef": np.zeros((2, 3)), "intercept": np.ones(2), "n": 10},
    ]
    params = model.aggregate(updates)
    np.testing.assert_allclose(params["coef"], 0.75)
    np.testing.assert_allclose(params["intercept"], 0.25)


def test_logistic_regression_multiclass(wine: pd.DataFrame) -> None:
    cols = features(wine)
    nodes = scaled(split(wine), cols)
    model = L.FederatedLogisticRegression(classes=[0, 1, 2], local_epochs=5)
    params = federated(
        L.TrainTest(model=model, label="target", splitter=L.FederatedSplitter()), nodes, 20
    )
    pooled = pd.concat(nodes, ignore_index=True)
    assert model.eval(pooled[cols], pooled["target"], params)["accuracy"] > 0.95


@pytest.mark.parametrize("alpha", [0.0, 2.5])
def test_linear_regression_is_exact(diabetes: pd.DataFrame, alpha: float) -> None:
    nodes, cols = split(diabetes), features(diabetes)
    model = L.FederatedLinearRegression(alpha=alpha)
    op = L.Train(model=model, label="target")
    params = L.Aggregation(model=model).merge([op.local(df) for df in nodes])
    pooled = pd.concat(nodes, ignore_index=True)
    ref = (Ridge(alpha=alpha) if alpha else LinearRegression()).fit(pooled[cols], pooled.target)
    np.testing.assert_allclose(params["coef"], ref.coef_, rtol=1e-7)
    assert params["intercept"] == pytest.approx(ref.intercept_, rel=1e-9)
    metrics = model.eval(pooled[cols], pooled["target"], params)
    assert metrics["r2"] == pytest.approx(ref.score(pooled[cols], pooled.target), rel=1e-9)


@pytest.mark.parametrize("named", [False, True])
def test_eval_is_multiclass_correct(wine: pd.DataFrame, named: bool) -> None:
    """Accuracy, per-class and macro P/R/F1, a labelled confusion matrix, OvR AUC."""
    cols = features(wine)
    names = {0: "barolo", 1: "grignolino", 2: "barbera"}
    df = wine.assign(target=wine.target.map(names)) if named else wine
    nodes = split(df)
    model = L.FederatedRandomForestClassifier(n_estimators=3, max_depth=2, random_state=1)
    params = model.aggregate([model.train(n[cols], n["target"]) for n in nodes])
    labels = params["classes"]
    y = df["target"].to_numpy()
    proba = model.predict(df[cols], params)
    pred = model.classify(df[cols], params)
    got = model.eval(df[cols], y, params)

    assert got["accuracy"] == pytest.approx((pred == y).mean())
    assert got["accuracy"] < 1.0  # a weak model, so that the metrics differ per class
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, label in enumerate(labels):
        c = got["per_class"][str(label)]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx(
            (p[i], r[i], f[i], s[i])
        )
    assert got["macro"]["f1"] == pytest.approx(f.mean())
    assert got["macro"]["precision"] == pytest.approx(p.mean())
    assert got["confusion_matrix"]["labels"] == labels
    assert got["confusion_matrix"]["matrix"] == confusion_matrix(y, pred, labels=labels).tolist()
    assert got["auc"]["macro"] == pytest.approx(
        roc_auc_score(y, proba, multi_class="ovr", labels=labels)
    )
    for i, label in enumerate(labels):
        assert got["auc"]["per_class"][str(label)] == pytest.approx(
            roc_auc_score(y == label, proba[:, i])
        )
    json.dumps(got)  # JSON-ready


def test_node_metrics_merge_to_the_pooled_ones(wine: pd.DataFrame) -> None:
    nodes, cols = split(wine), features(wine)
    model = L.FederatedRandomForestClassifier(n_estimators=3, max_depth=2)
    params = model.aggregate([model.train(n[cols], n["target"]) for n in nodes])
    merged = L.merge_classification([model.eval(n[cols], n["target"], params) for n in nodes])
    pooled = model.eval(wine[cols], wine["target"], params)
    assert merged["accuracy"] == pytest.approx(pooled["accuracy"])
    assert merged["macro"] == pytest.approx(pooled["macro"])
    assert merged["n"] == pooled["n"]
    for label, values in pooled["per_class"].items():
        assert merged["per_class"][label] == pytest.approx(values)
    assert merged["confusion_matrix"] == pooled["confusion_matrix"]
    assert merged["auc_pooled"] is False


@pytest.mark.parametrize("stratified", [True, False])
def test_local_cross_validation_returns_k_fold_metrics(
    cancer: pd.DataFrame, stratified: bool
) -> None:
    node = split(cancer)[3]
    cv = L.LocalCrossValidation(
        model=L.FederatedRandomForestClassifier(n_estimators=10), label="target", folds=4,
        stratified=stratified, random_state=2,
    )  # fmt: skip
    out = cv.local(node)
    assert len(out["folds"]) == 4
    assert sum(f["n"] for f in out["folds"]) == len(node)  # the folds partition the rows
    assert out["mean"]["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in out["folds"]]))
    assert all(0.8 < f["accuracy"] <= 1.0 for f in out["folds"])
    if stratified:
        share = node["target"].mean()
        for f in out["folds"]:
            assert f["per_class"]["1"]["support"] / f["n"] == pytest.approx(share, abs=0.02)
    json.dumps(out)


def test_local_cross_validation_of_a_regressor(diabetes: pd.DataFrame) -> None:
    cv = L.LocalCrossValidation(model=L.FederatedLinearRegression(), label="target", folds=3)
    out = cv.local(diabetes)
    assert len(out["folds"]) == 3 and 0.3 < out["mean"]["r2"] < 0.6


@pytest.mark.parametrize(
    "model",
    [
        L.FederatedRandomForestClassifier(n_estimators=5, strategy="MERGE"),
        L.FederatedRandomForestClassifier(n_estimators=5, strategy="MAJORITY_VOTE"),
        L.FederatedLogisticRegression(classes=[0, 1], local_epochs=2),
        L.FederatedLinearRegression(alpha=0.5),
    ],
    ids=["rf-merge", "rf-vote", "logistic", "linear"],
)
def test_save_load_round_trips_without_pickle(
    cancer: pd.DataFrame, model: L.Model, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes, cols = split(cancer), features(cancer)
    params = model.aggregate([model.train(n[cols], n["target"]) for n in nodes])
    path = model.save(params, tmp_path / "model.bin")

    import pickle

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used")

    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(pickle, name, refuse)
    loaded, loaded_params = L.Model.load(path)
    assert loaded == model and type(loaded) is type(model)
    np.testing.assert_array_equal(
        loaded.predict(cancer[cols], loaded_params), model.predict(cancer[cols], params)
    )
    with pytest.raises(L.LearnError) as err:
        L.Model.loads(_codec.encode({"not": "a model"}))
    assert err.value.code == "learn.load"


def test_operations_are_json_code_as_data() -> None:
    ops = [
        L.Train(model=L.FederatedLinearRegression(), label="y", features=["a", "b"]),
        L.TrainTest(
            model=L.FederatedRandomForestClassifier(strategy="MAJORITY_VOTE"), label="y",
            splitter=L.FederatedSplitter(test_percentage=0.1, stratify="y"),
        ),
        L.LocalCrossValidation(model=L.FederatedLogisticRegression(classes=[0, 1]), label="y"),
        L.Aggregation(model=L.FederatedRandomForestClassifier()),
    ]  # fmt: skip
    for op in ops:
        again = L.LearnEntity.from_spec(json.loads(json.dumps(op.spec())))
        assert again == op and type(again.model) is type(op.model)  # type: ignore[attr-defined]


def test_train_test_run_gives_update_and_local_metrics(cancer: pd.DataFrame) -> None:
    op = L.TrainTest(model=L.FederatedRandomForestClassifier(n_estimators=10), label="target")
    out = op.run(split(cancer)[4], salt="n4")
    assert out["update"]["n"] == len(split(cancer)[4]) - int(len(split(cancer)[4]) * 0.2)
    assert out["metrics"]["accuracy"] > 0.85
