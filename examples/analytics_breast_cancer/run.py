"""Federated analytics and models on breast cancer data held by 5 simulated hospitals.

scikit-learn's bundled breast cancer table (569 patients, 30 features, ``target``:
0 malignant, 1 benign), with about 5% of ten ``worst_*`` values removed, is shuffled and
split unevenly over 5 nodes. Each analysis is a ``shoal.steps`` artifact run with
``shoal.simulate``; every node only ever sends aggregates or model parameters.

1. counts and means per group (``GroupCountEstimator``, ``GroupMeanEstimator``);
2. a filtered query (patients with ``mean_radius >= 15``);
3. a federated pipeline (mean imputer + standard scaler) fitted on every node's
   statistics (the same numbers as scikit-learn's on the pooled table) in front of a
   random forest trained with ``TrainTest`` and aggregated by ``MERGE`` and by
   ``MAJORITY_VOTE``; its ``LocalCrossValidation`` (5 folds per node);
4. a logistic regression trained by FedAvg over ``Iterate``, then evaluated by the steps
   after the loop.

Each model is compared with the same scikit-learn model trained centrally on the pooled
train splits (the union of the nodes' splits). Prints ``OK`` when the pooled answers
agree and every model is within 0.03 of its pooled reference's accuracy on the held-out
test rows (the union of the nodes' test splits; the logistic regression on the train
rows too: a forest scores about 1.0 on its own training rows, so that comparison says
nothing about it).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import shoal
from shoal import NodeProfile
from shoal.steps import (
    Aggregation,
    Artifact,
    Collect,
    CountEstimator,
    Distribute,
    Evaluate,
    FederatedLogisticRegression,
    FederatedPipeline,
    FederatedRandomForestClassifier,
    FederatedSimpleImputer,
    FederatedSplitter,
    FederatedStandardScaler,
    Finalize,
    GroupCountEstimator,
    GroupMeanEstimator,
    Iterate,
    LocalCrossValidation,
    MeanEstimator,
    MergeMetrics,
    Parallel,
    Query,
    QueryFeature,
    TrainedModel,
    TrainTest,
)

SHARES = (0.1, 0.15, 0.2, 0.25, 0.3)  # five hospitals of different sizes
TOLERANCE = 0.03  # accuracy within this of the pooled reference


def load_table(seed: int) -> pd.DataFrame:
    """The table with about 5% of ten columns' values missing (for the imputer)."""
    df = load_breast_cancer(as_frame=True).frame
    df = df.rename(columns=lambda c: str(c).replace(" ", "_"))
    rng = np.random.default_rng(seed)
    holed = [c for c in df.columns if c.startswith("worst_")][:10]
    for c in holed:
        df.loc[rng.random(len(df)) < 0.05, c] = np.nan
    return df


def split_nodes(df: pd.DataFrame, folder: Path, seed: int) -> tuple[list[NodeProfile], list[Any]]:
    """One CSV per hospital; returns the node profiles and each node's frame."""
    rows = np.random.default_rng(seed).permutation(len(df))
    cuts = (np.cumsum(SHARES)[:-1] * len(df)).astype(int)
    frames, nodes = [], []
    for i, part in enumerate(np.split(rows, cuts)):
        frame = df.iloc[part].reset_index(drop=True)
        path = folder / f"hospital-{i}.csv"
        frame.to_csv(path, index=False)
        frames.append(frame)
        nodes.append(NodeProfile(name=f"hospital-{i}", datasets={"cancer": path}))
    return nodes, frames


class Runner:
    """Runs artifacts on the nodes and times them."""

    def __init__(self, nodes: list[NodeProfile], executor: str) -> None:
        self.nodes = nodes
        self.executor = executor

    def __call__(self, artifact: Artifact) -> dict[str, Any]:
        start = time.perf_counter()
        run = shoal.simulate(artifact, nodes=self.nodes, executor=self.executor)
        if not run.ok:
            sys.exit(f"{artifact.name} failed: {run.reason}")
        print(f"  ({artifact.name}: {time.perf_counter() - start:.1f}s)")
        return dict(run.globals)


def model_artifact(name: str, query: Query, model: Any, splitter: FederatedSplitter) -> Artifact:
    """Train/test on every node, aggregate, send the model back, evaluate on test splits."""
    return Artifact(
        steps=[
            Parallel(TrainTest(query, model=model, label="target", splitter=splitter), Collect()),
            Finalize(Aggregation(model=model), Distribute()),
            Parallel(Evaluate(split="test"), Collect()),
            Finalize(MergeMetrics()),
        ],
        dataset="cancer",
        name=name,
    )


def fedavg_artifact(query: Query, model: Any, splitter: FederatedSplitter, rounds: int) -> Artifact:
    """FedAvg: ``rounds`` passes of train-then-average, then the steps after the loop."""
    return Artifact(
        steps=[
            Iterate(
                rounds,
                [
                    Parallel(
                        TrainTest(query, model=model, label="target", splitter=splitter),
                        Collect(),
                    ),
                    Finalize(Aggregation(model=model), Distribute()),
                ],
            ),
            Parallel(Evaluate(split="test"), Collect()),
            Finalize(MergeMetrics()),
        ],
        dataset="cancer",
        name="fedavg",
    )


def pooled_splits(frames: list[Any], nodes: list[NodeProfile], splitter: Any) -> tuple[Any, Any]:
    """The union of the nodes' train splits and of their test splits (node id = salt)."""
    parts = [splitter.split(f, salt=n.name) for f, n in zip(frames, nodes, strict=True)]
    return (
        pd.concat([a for a, _ in parts], ignore_index=True),
        pd.concat([b for _, b in parts], ignore_index=True),
    )


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def main() -> None:
    """Run every analysis, print its figures and whether it matches the pooled answer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=20, help="FedAvg passes of Iterate")
    parser.add_argument("--executor", default="process", choices=["process", "inline"])
    args = parser.parse_args()

    df = load_table(args.seed)
    features = [c for c in df.columns if c != "target"]
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        nodes, frames = split_nodes(df, Path(tmp), args.seed)
        run = Runner(nodes, args.executor)
        print(f"{len(df)} rows over {len(nodes)} nodes: {[len(f) for f in frames]}")

        print("\n1. counts and means per group (target: 0 malignant, 1 benign)")
        counts = run(GroupCountEstimator(by="target").artifact(dataset="cancer"))["result"]
        means = run(
            GroupMeanEstimator(by="target", feature="mean_radius").artifact(dataset="cancer")
        )["result"]
        print(f"  count per group: {counts}")
        print(f"  mean_radius per group: {means}")
        want_counts = df.groupby("target").size().to_dict()
        want_means = df.groupby("target")["mean_radius"].mean().to_dict()
        check(
            {int(k): int(v) for k, v in counts.items()} == want_counts,
            "group counts equal pandas",
            failures,
        )
        check(
            all(math.isclose(means[k], want_means[int(k)]) for k in means)
            and len(means) == len(want_means),
            "group means equal pandas",
            failures,
        )

        print("\n2. a filtered query: mean_radius >= 15")
        large = QueryFeature("mean_radius") >= 15
        n_large = run(CountEstimator(query=large).artifact(dataset="cancer"))["result"]
        texture = run(MeanEstimator(feature="mean_texture", query=large).artifact("cancer"))
        print(f"  patients: {n_large}, their mean_texture: {texture['result']:.4f}")
        pooled_large = df[df.mean_radius >= 15]
        check(n_large == len(pooled_large), "filtered count equals pandas", failures)
        check(
            math.isclose(texture["result"], pooled_large.mean_texture.mean()),
            "filtered mean equals pandas",
            failures,
        )

        print("\n3. a federated pipeline (mean imputer + standard scaler) and a random forest")
        pipeline = FederatedPipeline(
            stages=[
                FederatedSimpleImputer(features_in=features, strategy="mean"),
                FederatedStandardScaler(features_in=features),
            ]
        )
        query = Query().add(pipeline)  # fitted on every node's statistics, then applied
        splitter = FederatedSplitter(test_percentage=0.3, random_state=args.seed, stratify="target")
        train, test = pooled_splits(frames, nodes, splitter)

        # The same forest trained centrally. A forest scores ~1.0 on its own training rows,
        # so the forests are judged on the held-out test rows (the union of the nodes' test
        # splits); train accuracy is printed for information.
        forest_params = {"class_weight": "balanced", "random_state": 0}
        ref = make_pipeline(
            SimpleImputer(), StandardScaler(), RandomForestClassifier(**forest_params)
        ).fit(train[features], train.target)
        ref_train = ref.score(train[features], train.target)
        ref_test = ref.score(test[features], test.target)
        print(f"  pooled sklearn: train accuracy {ref_train:.4f}, test accuracy {ref_test:.4f}")
        for strategy in ("MERGE", "MAJORITY_VOTE"):
            forest = FederatedRandomForestClassifier(strategy=strategy, **forest_params)
            out = run(model_artifact(f"rf_{strategy.lower()}", query, forest, splitter))
            model = TrainedModel.loads(out["model"])
            acc_train = model.eval(train)["accuracy"]
            acc_test = out["metrics"]["accuracy"]  # the nodes' evaluations, pooled
            print(
                f"  RF {strategy}: train accuracy {acc_train:.4f}, test accuracy "
                f"{acc_test:.4f} (nodes' own models on their test splits: "
                f"{out['local_metrics']['accuracy']:.4f})"
            )
            check(
                math.isclose(acc_test, model.eval(test)["accuracy"]),
                f"RF {strategy}: nodes' pooled test metrics equal the model's on the union",
                failures,
            )
            check(acc_test >= ref_test - TOLERANCE, f"RF {strategy} test accuracy", failures)

        # The transform every node applied, fitted on all nodes' statistics, against
        # scikit-learn's imputer and scaler fitted on the pooled table.
        # The query's state: one per query stage; the pipeline's: one per its stage.
        assert model.fitted is not None
        imputer, scaler = model.fitted["stages"][0]["stages"]
        sk_imp = SimpleImputer().fit(df[features])
        sk_scl = StandardScaler().fit(sk_imp.transform(df[features]))
        gap = max(
            np.abs(np.asarray(imputer["statistics"]) - sk_imp.statistics_).max(),
            np.abs(np.asarray(scaler["mean"]) - sk_scl.mean_).max(),
            np.abs(np.asarray(scaler["scale"]) - sk_scl.scale_).max() / sk_scl.scale_.min(),
        )
        print(f"  federated pipeline vs pooled sklearn: largest difference {gap:.2e}")
        check(gap < 1e-9, "federated imputer and scaler equal pooled sklearn's", failures)

        cv = run(
            Artifact(
                steps=[
                    Parallel(
                        LocalCrossValidation(
                            query,
                            model=FederatedRandomForestClassifier(n_estimators=50, **forest_params),
                            label="target",
                            folds=5,
                        ),
                        Collect(),
                    ),
                    Finalize(MergeMetrics()),
                ],
                dataset="cancer",
                name="local_cv",
            )
        )["cv"]
        for node, result in cv.items():
            folds = [round(f["accuracy"], 3) for f in result["folds"]]
            print(f"  {node} 5-fold accuracy: {folds}, mean {result['mean']['accuracy']:.4f}")
        check(
            len(cv) == len(nodes) and all(len(r["folds"]) == 5 for r in cv.values()),
            "LocalCrossValidation: 5 fold metrics per node",
            failures,
        )

        print(f"\n4. logistic regression, FedAvg over Iterate ({args.rounds} passes)")
        lr_ref = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()).fit(
            train[features], train.target
        )
        lr_ref_train = lr_ref.score(train[features], train.target)
        lr_ref_test = lr_ref.score(test[features], test.target)
        print(f"  pooled sklearn: train accuracy {lr_ref_train:.4f}, test {lr_ref_test:.4f}")
        logistic = FederatedLogisticRegression(classes=[0, 1], learning_rate=0.5, local_epochs=5)
        out = run(fedavg_artifact(query, logistic, splitter, args.rounds))
        model = TrainedModel.loads(out["model"])
        acc_train = model.eval(train)["accuracy"]
        acc_test = out["metrics"]["accuracy"]
        print(f"  FedAvg: train accuracy {acc_train:.4f}, test accuracy {acc_test:.4f}")
        check(acc_train >= lr_ref_train - TOLERANCE, "FedAvg train accuracy", failures)
        check(acc_test >= lr_ref_test - TOLERANCE, "FedAvg test accuracy", failures)

    print("\nOK" if not failures else f"\nFAILED: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
