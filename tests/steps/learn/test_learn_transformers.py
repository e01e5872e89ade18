"""Each federated transformer, fitted over uneven nodes, equals scikit-learn on the pooled data."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import split
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    Binarizer,
    KBinsDiscretizer,
    LabelBinarizer,
    MinMaxScaler,
    OneHotEncoder,
    StandardScaler,
)

from shoal._steps import learn as L

pytestmark = pytest.mark.timeout(60)


def features(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c != "target"]


def per_node(t: L.FederatedTransformer, nodes: list[pd.DataFrame]) -> tuple[Any, pd.DataFrame]:
    """Fit over the nodes; every node's transformed frame, concatenated in node order."""
    fitted = L.fit_federated(t, nodes)
    return fitted, pd.concat([t.transform(df, fitted) for df in nodes], ignore_index=True)


@pytest.mark.parametrize("data", ["cancer", "holed", "wine"])
def test_min_max_scaler_equals_pooled_sklearn(data: str, request: pytest.FixtureRequest) -> None:
    df = request.getfixturevalue(data)
    cols, nodes = features(df), split(df)
    t = L.FederatedMinMaxScaler(features_in=cols, feature_range=(-1.0, 2.0))
    fitted, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = MinMaxScaler(feature_range=(-1.0, 2.0)).fit(pooled[cols])
    np.testing.assert_array_equal(fitted["data_min"], ref.data_min_)
    np.testing.assert_array_equal(fitted["data_max"], ref.data_max_)
    np.testing.assert_allclose(fitted["scale"], ref.scale_, rtol=1e-14)
    np.testing.assert_allclose(fitted["min"], ref.min_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[cols], ref.transform(pooled[cols]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("data", ["cancer", "holed", "wine"])
def test_standard_scaler_equals_pooled_sklearn(data: str, request: pytest.FixtureRequest) -> None:
    df = request.getfixturevalue(data)
    cols, nodes = features(df), split(df)
    t = L.FederatedStandardScaler(features_in=cols)
    fitted, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = StandardScaler().fit(pooled[cols])
    np.testing.assert_allclose(fitted["mean"], ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(fitted["var"], ref.var_, rtol=1e-10)
    np.testing.assert_allclose(fitted["scale"], ref.scale_, rtol=1e-10)
    np.testing.assert_array_equal(
        np.broadcast_to(ref.n_samples_seen_, len(cols)), fitted["n_samples_seen"]
    )
    np.testing.assert_allclose(out[cols], ref.transform(pooled[cols]), rtol=1e-9, atol=1e-12)


def test_standard_scaler_without_mean_or_std(wine: pd.DataFrame) -> None:
    cols, nodes = features(wine), split(wine)
    pooled = pd.concat(nodes, ignore_index=True)
    for kw in ({"with_mean": False}, {"with_std": False}):
        t = L.FederatedStandardScaler(features_in=cols, **kw)
        _, out = per_node(t, nodes)
        ref = StandardScaler(**kw).fit(pooled[cols])
        np.testing.assert_allclose(out[cols], ref.transform(pooled[cols]), rtol=1e-9, atol=1e-12)


def test_kbins_uniform_edges_and_bins_are_sklearn_exactly(cancer: pd.DataFrame) -> None:
    cols, nodes = features(cancer), split(cancer)
    t = L.FederatedKBinsDiscretizer(features_in=cols, n_bins=7, strategy="uniform")
    fitted, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = KBinsDiscretizer(n_bins=7, encode="ordinal", strategy="uniform").fit(pooled[cols])
    for mine, theirs in zip(fitted["bin_edges"], ref.bin_edges_, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-15)
    np.testing.assert_array_equal(out[cols], ref.transform(pooled[cols]))


@pytest.mark.parametrize("method", ["averaged_inverted_cdf", "linear"])
@pytest.mark.parametrize("resolution", [64, 4096])
def test_kbins_quantile_edges_within_the_stated_bound(
    cancer: pd.DataFrame, method: str, resolution: int
) -> None:
    """Each edge is within (max - min) / resolution of scikit-learn's exact pooled edge."""
    cols, nodes = features(cancer), split(cancer)
    t = L.FederatedKBinsDiscretizer(
        features_in=cols, n_bins=5, strategy="quantile", quantile_method=method,
        resolution=resolution,
    )  # fmt: skip
    assert t.rounds() == 2
    fitted, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = KBinsDiscretizer(
        n_bins=5, encode="ordinal", strategy="quantile", quantile_method=method
    ).fit(pooled[cols])
    worst = 0.0
    for j, (mine, theirs) in enumerate(zip(fitted["bin_edges"], ref.bin_edges_, strict=True)):
        bound = (pooled[cols[j]].max() - pooled[cols[j]].min()) / resolution
        assert len(mine) == len(theirs)
        assert mine[0] == theirs[0] and mine[-1] == theirs[-1]  # min and max: exact
        err = np.abs(np.asarray(mine) - theirs).max()
        assert err <= bound * (1 + 1e-9), (cols[j], err, bound)
        worst = max(worst, err / bound)
    # Most rows fall in the same bin as scikit-learn puts them.
    agree = (out[cols].to_numpy() == ref.transform(pooled[cols])).mean()
    assert agree > (0.95 if resolution == 64 else 0.995)


def test_binarizer_equals_sklearn(wine: pd.DataFrame) -> None:
    cols, nodes = features(wine), split(wine)
    t = L.FederatedBinarizer(features_in=cols, threshold=2.5)
    _, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    np.testing.assert_array_equal(
        out[cols], Binarizer(threshold=2.5).fit(pooled[cols]).transform(pooled[cols])
    )


def sorted_split(df: pd.DataFrame) -> list[pd.DataFrame]:
    """Nodes holding different classes: rows sorted by label, then cut unevenly."""
    ordered = df.sort_values("target", kind="stable").reset_index(drop=True)
    cuts = [0, *(np.cumsum([0.05, 0.1, 0.2, 0.25]) * len(df)).astype(int), len(df)]
    return [ordered.iloc[a:b].reset_index(drop=True) for a, b in pairwise(cuts)]


@pytest.mark.parametrize("data", ["cancer", "wine"])
def test_label_binarizer_classes_come_from_every_node(
    data: str, request: pytest.FixtureRequest
) -> None:
    df = request.getfixturevalue(data)
    nodes = sorted_split(df)  # the first nodes see one class only
    assert nodes[0]["target"].nunique() == 1
    t = L.FederatedLabelBinarizer(features_in="target", features_out="y")
    fitted, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = LabelBinarizer().fit(pooled["target"])
    assert fitted["classes"] == ref.classes_.tolist()
    np.testing.assert_array_equal(out[t.output_columns(fitted)], ref.transform(pooled["target"]))


def test_one_hot_categories_come_from_every_node(wine: pd.DataFrame) -> None:
    df = wine.assign(ash_level=(wine["ash"] * 2).round().astype(int), kind=wine["target"])
    nodes = sorted_split(df)
    cols = ["kind", "ash_level"]
    t = L.FederatedOneHotEncoder(features_in=cols)
    fitted, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = OneHotEncoder().fit(pooled[cols])
    assert fitted["categories"] == [c.tolist() for c in ref.categories_]
    names = t.output_columns(fitted)
    assert names[:3] == ["kind_0", "kind_1", "kind_2"]
    np.testing.assert_array_equal(out[names], ref.transform(pooled[cols]).toarray())
    assert "kind" not in out.columns


def test_one_hot_unknown_category(wine: pd.DataFrame) -> None:
    nodes = sorted_split(wine)
    t = L.FederatedOneHotEncoder(features_in="target")
    fitted = L.fit_federated(t, nodes[:1])
    with pytest.raises(L.LearnError, match=r"categories \[1, 2\]") as err:
        t.transform(nodes[-1], fitted)
    assert err.value.code == "learn.column"
    lenient = L.FederatedOneHotEncoder(features_in="target", handle_unknown="ignore")
    assert lenient.transform(nodes[-1], fitted)["target_0"].sum() == 0


@pytest.mark.parametrize("strategy", ["mean", "most_frequent", "constant"])
def test_simple_imputer_exact_strategies(holed: pd.DataFrame, strategy: str) -> None:
    # Rounded values, so that most_frequent has real modes (and ties).
    df = holed.copy()
    cols = features(df)[:8]
    df[cols] = df[cols].round(1)
    nodes = split(df)
    t = L.FederatedSimpleImputer(features_in=cols, strategy=strategy, fill_value=-1.0)
    fitted, out = per_node(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = SimpleImputer(strategy=strategy, fill_value=-1.0).fit(pooled[cols])
    if strategy != "constant":
        np.testing.assert_allclose(fitted["statistics"], ref.statistics_, rtol=1e-12)
    np.testing.assert_allclose(out[cols], ref.transform(pooled[cols]), rtol=1e-12)
    assert not out[cols].isna().any().any()


def test_simple_imputer_median_within_bound(holed: pd.DataFrame) -> None:
    cols, nodes = features(holed), split(holed)
    t = L.FederatedSimpleImputer(features_in=cols, strategy="median", resolution=1024)
    fitted = L.fit_federated(t, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = SimpleImputer(strategy="median").fit(pooled[cols])
    bound = (pooled[cols].max() - pooled[cols].min()).to_numpy() / 1024
    assert (np.abs(np.asarray(fitted["statistics"]) - ref.statistics_) <= bound).all()


def test_clamp_drop_rename_filter(wine: pd.DataFrame) -> None:
    nodes = split(wine)
    pooled = pd.concat(nodes, ignore_index=True)
    pipe = L.FederatedPipeline(
        stages=[
            L.FederatedFilter(features_in="alcohol", operation=">=", value=12.5),
            L.FederatedFilter(features_in="target", operation="in", value=[0, 2]),
            L.FederatedClamp(features_in="magnesium", min_value=90, max_value=120),
            L.FederatedDrop(features_in=["ash", "hue"]),
            L.FederatedRename(features_in="target", features_out="cultivar"),
        ]
    )
    assert pipe.rounds() == 0
    _, out = per_node(pipe, nodes)
    ref = pooled[(pooled.alcohol >= 12.5) & pooled.target.isin([0, 2])].drop(columns=["ash", "hue"])
    ref = ref.assign(magnesium=ref.magnesium.clip(90, 120)).rename(columns={"target": "cultivar"})
    pd.testing.assert_frame_equal(out, ref.reset_index(drop=True))


@pytest.mark.parametrize(
    ("operation", "value", "expected"),
    [("<", 13, lambda c: c < 13), ("!=", 13.2, lambda c: c != 13.2),
     ("not_in", [13.2], lambda c: ~c.isin([13.2])), ("is_null", None, lambda c: c.isna()),
     ("not_null", None, lambda c: c.notna())],
)  # fmt: skip
def test_filter_operations(holed: pd.DataFrame, operation: str, value: Any, expected: Any) -> None:
    f = L.FederatedFilter(features_in="mean_radius", operation=operation, value=value)
    pd.testing.assert_frame_equal(f.transform(holed), holed[expected(holed["mean_radius"])])


def test_pipeline_imputer_then_scaler_equals_sklearn_pipeline(holed: pd.DataFrame) -> None:
    """Each stage is fitted on the output of the fitted stages before it, like sklearn."""
    cols, nodes = features(holed), split(holed)
    pipe = L.FederatedPipeline(
        stages=[
            L.FederatedSimpleImputer(features_in=cols, strategy="mean"),
            L.FederatedStandardScaler(features_in=cols),
        ]
    )
    assert pipe.rounds() == 2
    fitted, out = per_node(pipe, nodes)
    pooled = pd.concat(nodes, ignore_index=True)
    ref = make_pipeline(SimpleImputer(), StandardScaler()).fit(pooled[cols])
    np.testing.assert_allclose(fitted["stages"][1]["var"], ref[1].var_, rtol=1e-10)
    np.testing.assert_allclose(out[cols], ref.transform(pooled[cols]), rtol=1e-9, atol=1e-12)


def test_pipeline_of_multi_round_stages(holed: pd.DataFrame) -> None:
    """Median imputer (2 rounds), quantile bins (2), one-hot (1): 5 rounds, then applied."""
    cols = features(holed)[:3]
    nodes = split(holed)
    pipe = L.FederatedPipeline(
        stages=[
            L.FederatedSimpleImputer(features_in=cols, strategy="median"),
            L.FederatedDrop(features_in="target"),
            L.FederatedKBinsDiscretizer(features_in=cols, n_bins=4, strategy="quantile"),
            L.FederatedOneHotEncoder(features_in=cols),
        ]
    )
    assert pipe.rounds() == 5
    seen = 0
    state = None
    while not pipe.done(state):
        state = pipe.merge([pipe.local(df, state) for df in nodes], state)
        seen += 1
    assert seen == 5
    out = pd.concat([pipe.transform(df, state) for df in nodes], ignore_index=True)
    onehot = [c for c in out.columns if c.startswith(cols[0] + "_")]
    assert len(onehot) == 4
    # Every row is in exactly one bin of each column; the quartile bins are balanced.
    assert (out[onehot].sum(axis=1) == 1).all()
    assert out[onehot].sum().min() > 0.15 * len(out)  # imputed medians crowd one bin


def test_splitter_is_seeded_per_node_and_stratified(cancer: pd.DataFrame) -> None:
    s = L.FederatedSplitter(test_percentage=0.25, random_state=3, stratify="target")
    train, test = s.split(cancer, salt="node-1")
    assert len(train) + len(test) == len(cancer)
    assert set(train.index).isdisjoint(test.index)
    pd.testing.assert_frame_equal(test, s.split(cancer, salt="node-1")[1])  # reproducible
    assert not test.index.equals(s.split(cancer, salt="node-2")[1].index)
    for label, count in cancer["target"].value_counts().items():
        assert (test["target"] == label).sum() == int(count * 0.25)
    plain = L.FederatedSplitter(test_percentage=0.2).split(cancer)[1]
    assert len(plain) == int(len(cancer) * 0.2)
