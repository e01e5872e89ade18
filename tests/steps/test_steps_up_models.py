"""The same models artifact file gives the same answer in the simulator and on
``shoal up --nodes 3`` (issue 17, Must show 6): a federated pipeline (imputer + scaler)
in front of a random forest (MERGE) trained with TrainTest; a logistic regression
trained by FedAvg over ``Iterate``; a ``Sequential`` and a ``RoundRobin`` step; an
estimator with ``secure=True`` (the chain's secure sum). Real processes, real sockets."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from test_steps_up import _load, up  # noqa: F401  (the fixture)

import shoal
from shoal.steps import TrainedModel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ARTIFACTS = """
import updown_ops
from shoal.steps import (
    Aggregation, Arrange, Artifact, Collect, Distribute, Evaluate, FederatedLogisticRegression,
    FederatedPipeline, FederatedRandomForestClassifier, FederatedSimpleImputer,
    FederatedSplitter, FederatedStandardScaler, Finalize, GroupMeanEstimator, Iterate,
    MergeMetrics, Parallel, Query, RoundRobin, Sequential, TrainTest,
)

FEATURES = {features!r}
query = Query().add(
    FederatedPipeline(
        stages=[
            FederatedSimpleImputer(features_in=FEATURES, strategy="mean"),
            FederatedStandardScaler(features_in=FEATURES),
        ]
    )
)
splitter = FederatedSplitter(test_percentage=0.3, random_state=0, stratify="target")
forest = FederatedRandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)
logreg = FederatedLogisticRegression(classes=[0, 1], local_epochs=2)


def train_test(model):
    return [
        Parallel(TrainTest(query, model=model, label="target", splitter=splitter), Collect()),
        Finalize(Aggregation(model=model), Distribute()),
    ]


# The initiator is named: a step on one node otherwise runs on whichever node is free
# ("any"), which on a deployment is whichever asks first.
ON = dict(dataset="cancer", initiator="node-00000")
evaluate = [Parallel(Evaluate(split="test"), Collect()), Finalize(MergeMetrics())]
rf = Artifact(steps=[*train_test(forest), *evaluate], name="rf", **ON)
fedavg = Artifact(
    steps=[Iterate(3, train_test(logreg)), *evaluate], name="fedavg", **ON
)
chain = Artifact(
    steps=[
        Sequential(updown_ops.Tally(name="chain"), Arrange()),
        RoundRobin(updown_ops.Tally(name="ring", keep=("chain",)), Collect()),
        Finalize(updown_ops.Tallies(names=("chain", "ring"))),
    ],
    name="chainring",
    **ON,
)
secure = GroupMeanEstimator(by="target", feature="mean_radius", secure=True).artifact(
    "cancer", initiator="node-00000", name="secure"
)
"""
NAMES = ("rf", "fedavg", "chain", "secure")


def _table() -> pd.DataFrame:
    df = load_breast_cancer(as_frame=True).frame
    df = df.rename(columns=lambda c: str(c).replace(" ", "_"))[
        ["mean_radius", "mean_texture", "mean_smoothness", "worst_area", "target"]
    ]
    rng = np.random.default_rng(0)
    df.loc[rng.random(len(df)) < 0.05, "worst_area"] = np.nan  # for the imputer
    return df


def _finals(get: Callable[[str], list[Any]], aliases: list[str]) -> dict[str, Any]:
    """The products of each step that ran on one node (Initialize, Finalize), by alias:
    a list with one value per pass (several inside an ``Iterate``)."""
    out = {}
    for alias in aliases:
        records = get(alias)
        if len({r.node_id for r in records}) == 1:
            out[alias] = [r.value for r in records]
    return out


def _equal(a: Any, b: Any) -> bool:
    """Exactly equal, through dicts, lists and numpy arrays."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (np.ndarray, pd.DataFrame, pd.Series)):
        return type(a) is type(b) and np.array_equal(np.asarray(a), np.asarray(b))
    return bool(type(a) is type(b) and a == b)


def _last(finals: dict[str, Any]) -> Any:
    """The last Finalize step's products (aliases in plan order)."""
    return finals[list(finals)[-1]][-1]


def test_the_models_artifact_file_gives_the_same_answer_in_the_simulator_and_on_shoal_up(
    up: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    table = _table()
    csv = tmp_path / "cancer.csv"
    table.to_csv(csv, index=False)
    features = [c for c in table.columns if c != "target"]
    file = tmp_path / "models.py"
    file.write_text(ARTIFACTS.format(features=features))
    shutil.copyfile(Path(__file__).with_name("updown_ops.py"), tmp_path / "updown_ops.py")

    t0 = time.monotonic()
    fed = up("--nodes", "3", "--dataset", f"cancer={csv}", "--partition", "iid", "--seed", "0")
    fed.wait_ready()
    ids = {}
    for name in NAMES:  # all four deployed at once: they run side by side
        deployed = fed.shoal("deploy", f"{file}:{name}")
        assert deployed.returncode == 0, deployed.stderr + fed.diagnostics()
        ids[name] = deployed.stdout.strip()
    deploy: dict[str, dict[str, Any]] = {}
    sim: dict[str, dict[str, Any]] = {}
    with shoal.Client(fed.url, fed.token) as client:
        for name in NAMES:
            watched = fed.shoal("status", ids[name], "--watch", "--timeout", "120")
            assert watched.returncode == 0, watched.stdout + watched.stderr + fed.diagnostics()
            run = shoal.simulate(
                _load(f"{file}:{name}"), nodes=3, datasets={"cancer": csv},
                partition="iid", seed=0, executor="inline",
            )  # fmt: skip
            assert run.ok, run.reason
            aliases = [t.alias for t in run.plan.tasks]
            sim[name] = _finals(lambda a, r=run: r.results.select_all("products", alias=a), aliases)
            deploy[name] = _finals(
                lambda a, n=name: client.result_records(ids[n], "products", alias=a), aliases
            )
            assert sorted(sim[name]) == sorted(deploy[name]), name
    print(f"shoal up + 4 deployments + 4 simulations: {time.monotonic() - t0:.1f}s")

    differ = []
    for name in NAMES:
        for alias, passes in sim[name].items():
            assert len(deploy[name][alias]) == len(passes), (name, alias)
            for got, want in zip(deploy[name][alias], passes, strict=True):
                assert sorted(got) == sorted(want), (name, alias)
                for key in want:
                    if key == "model":  # trained models: the same predictions too
                        a, b = TrainedModel.loads(got[key]), TrainedModel.loads(want[key])
                        assert np.array_equal(a.predict(table), b.predict(table)), (name, alias)
                    if key == "secure.initiator":
                        # The initiator's public key of the secure sum: a fresh key pair
                        # per run, by design (the same in two simulations would be a bug).
                        assert got[key]["node"] == want[key]["node"] == "node-00000"
                        assert not _equal(got[key]["s"], want[key]["s"])
                    elif not _equal(got[key], want[key]):
                        differ.append((name, alias, key))
    assert not differ, differ  # every other product, models' bytes included, is equal

    # And the answers are the right ones, not only equal.
    final = _last(deploy["chain"])
    # The chain's tally (passed on by the ring) and each of the ring's 3 final tallies
    # hold every node's counts, which add up to the table's.
    assert len(final["chain"]) == 3 and len(final["ring"]) == 3
    for tally in [*final["chain"], *final["ring"]]:
        assert len(tally) == 3, tally
        assert sum(v[0] for v in tally.values()) == len(table)
        assert sum(v[1] for v in tally.values()) == int(table.target.sum())
    secure = _last(deploy["secure"])["result"]
    want_means = table.groupby("target").mean_radius.mean()
    assert {int(k) for k in secure} == set(want_means.index)
    for k, v in secure.items():
        assert abs(v - want_means[int(k)]) < 1e-5, (k, v)  # fixed point, 24 fraction bits
    for name in ("rf", "fedavg"):
        metrics = _last(deploy[name])["metrics"]
        assert metrics["accuracy"] > 0.85, (name, metrics["accuracy"])
