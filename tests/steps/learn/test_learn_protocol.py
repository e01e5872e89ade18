"""The protocol itself: what travels is codec-encodable statistics, never rows; clear errors."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import split

from shoal import _codec
from shoal._steps import learn as L

pytestmark = pytest.mark.timeout(60)

COLS = ["mean_radius", "mean_texture", "mean_area"]


def every_transformer() -> list[L.FederatedTransformer]:
    return [
        L.FederatedMinMaxScaler(features_in=COLS),
        L.FederatedStandardScaler(features_in=COLS, features_out=["a", "b", "c"]),
        L.FederatedKBinsDiscretizer(features_in=COLS, strategy="uniform"),
        L.FederatedKBinsDiscretizer(features_in=COLS, strategy="quantile", resolution=256),
        L.FederatedBinarizer(features_in=COLS, threshold=15.0),
        L.FederatedLabelBinarizer(features_in="target"),
        L.FederatedOneHotEncoder(features_in="target"),
        L.FederatedSimpleImputer(features_in=COLS, strategy="median"),
        L.FederatedSimpleImputer(features_in=COLS, strategy="most_frequent"),
        L.FederatedClamp(features_in=COLS, max_value=20.0),
        L.FederatedDrop(features_in="mean_area"),
        L.FederatedRename(features_in="target", features_out="label"),
        L.FederatedFilter(features_in="mean_radius", operation="<", value=15.0),
        L.FederatedPipeline(
            stages=[
                L.FederatedSimpleImputer(features_in=COLS),
                L.FederatedKBinsDiscretizer(features_in=COLS, strategy="quantile"),
                L.FederatedStandardScaler(features_in=COLS),
            ]
        ),
    ]


def wire(value: Any) -> Any:
    """What the other side receives: the value through shoal's codec (never pickle)."""
    return _codec.decode(_codec.encode(value))


def fit_over_wire(t: L.FederatedTransformer, nodes: list[pd.DataFrame]) -> Any:
    state = None
    rounds = 0
    while not t.done(state):
        stats = [wire(t.local(df, wire(state))) for df in nodes]
        state = wire(t.merge(stats, state))
        rounds += 1
    assert rounds == t.rounds()
    return state


@pytest.mark.parametrize("t", every_transformer(), ids=lambda t: type(t).__name__)
def test_fitting_over_the_codec_gives_the_same_transform(
    holed: pd.DataFrame, t: L.FederatedTransformer
) -> None:
    nodes = split(holed)
    state = fit_over_wire(t, nodes)
    direct = L.fit_federated(t, nodes)
    for df in nodes:
        pd.testing.assert_frame_equal(t.transform(df, state), t.transform(df, direct))
    # The transformer itself is JSON code-as-data.
    assert L.LearnEntity.from_spec(json.loads(json.dumps(t.spec()))) == t


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_leaves(v) for v in value)
    if isinstance(value, np.ndarray):
        return int(value.size)
    return 1


@pytest.mark.parametrize(
    "t",
    [t for t in every_transformer() if not t.stateless and "target" not in t.features_in],
    ids=lambda t: type(t).__name__,
)
def test_what_a_node_sends_does_not_grow_with_its_rows(
    cancer: pd.DataFrame, t: L.FederatedTransformer
) -> None:
    """Statistics, not rows: a node of 28 rows and one of 569 send as many numbers."""
    small, big = cancer.iloc[:28].round(0), cancer.round(0)  # few distinct values: bounded
    state = None
    while not t.done(state):
        a, b = t.local(small, state), t.local(big, state)
        if "value_counts" not in str(a):
            assert _leaves(a) == _leaves(b)
        state = t.merge([a, b], state)


def test_missing_column_names_the_columns_that_exist(cancer: pd.DataFrame) -> None:
    t = L.FederatedStandardScaler(features_in=["mean_radius", "age"])
    with pytest.raises(L.LearnError, match=r"no column \['age'\].*mean_texture") as err:
        t.local(cancer)
    assert err.value.code == "learn.column"
    op = L.Train(model=L.FederatedLinearRegression(), label="outcome")
    with pytest.raises(L.LearnError, match="outcome") as err:
        op.local(cancer)
    assert err.value.code == "learn.column"


def test_unfitted_and_empty_merges_are_refused(cancer: pd.DataFrame) -> None:
    t = L.FederatedKBinsDiscretizer(features_in=COLS, strategy="quantile")
    partial = t.merge([t.local(cancer)])
    assert not t.done(partial)
    with pytest.raises(L.LearnError) as err:
        t.transform(cancer, partial)
    assert err.value.code == "learn.unfitted"
    with pytest.raises(L.LearnError) as err:
        t.merge([])
    assert err.value.code == "learn.stats"
    with pytest.raises(L.LearnError) as err:
        L.FederatedRandomForestClassifier().aggregate([])
    assert err.value.code == "learn.stats"


def test_pipeline_refuses_statistics_of_another_stage(cancer: pd.DataFrame) -> None:
    pipe = L.FederatedPipeline(
        stages=[
            L.FederatedMinMaxScaler(features_in=COLS),
            L.FederatedStandardScaler(features_in=COLS),
        ]
    )
    first = pipe.merge([pipe.local(cancer)])
    stale = pipe.local(cancer)  # stage 0's statistics, sent late
    with pytest.raises(L.LearnError, match="stage 1") as err:
        pipe.merge([stale], first)
    assert err.value.code == "learn.stats"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: L.FederatedMinMaxScaler(features_in=["a", "b"], features_out=["x"]),
            "features_out",
        ),
        (lambda: L.FederatedFilter(features_in=["a", "b"], operation="<", value=1), "one column"),
        (lambda: L.FederatedFilter(features_in="a", operation="in", value=3), "list value"),
        (lambda: L.FederatedKBinsDiscretizer(features_in="a", n_bins=1), "n_bins"),
        (lambda: L.FederatedLabelBinarizer(features_in=["a", "b"]), "one label"),
        (lambda: L.FederatedSplitter(test_percentage=1.5), "test_percentage"),
    ],
)
def test_bad_parameters_are_named(build: Any, match: str) -> None:
    with pytest.raises(L.LearnError, match=match) as err:
        build()
    assert err.value.code == "learn.params"


def test_logistic_regression_refuses_unknown_labels(cancer: pd.DataFrame) -> None:
    model = L.FederatedLogisticRegression(classes=[0])
    with pytest.raises(L.LearnError, match=r"labels \[1\]") as err:
        model.train(cancer[COLS], cancer["target"])
    assert err.value.code == "learn.params"


def test_a_missing_scikit_learn_names_the_extra(
    cancer: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)  # as if not installed
    with pytest.raises(L.LearnError, match="scikit-learn") as err:
        L.FederatedRandomForestClassifier().train(cancer[COLS], cancer["target"])
    assert err.value.code == "learn.dependency"
    assert "shoal[steps]" in str(err.value)


def test_entities_are_frozen_and_strict() -> None:
    t = L.FederatedMinMaxScaler(features_in=COLS)
    with pytest.raises(ValueError):
        t.feature_range = (0.0, 2.0)  # type: ignore[misc]
    with pytest.raises(ValueError, match="extra"):
        L.FederatedMinMaxScaler(features_in=COLS, feature_rnage=(0.0, 2.0))  # type: ignore[call-arg]
    with pytest.raises(L.LearnError, match="no transformer or model class") as err:
        L.LearnEntity.from_spec({"kind": "nowhere.Thing", "params": {}})
    assert err.value.code == "learn.params"


def test_eval_refuses_labels_the_model_never_saw(cancer: pd.DataFrame) -> None:
    model = L.FederatedRandomForestClassifier(n_estimators=3)
    params = model.aggregate([model.train(cancer[COLS], cancer["target"])])
    with pytest.raises(L.LearnError, match=r"labels \[7\]") as err:
        model.eval(cancer[COLS].iloc[:2], [0, 7], params)
    assert err.value.code == "learn.params"
