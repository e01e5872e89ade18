"""``Iterate`` runs as the engine's inner loop, then the steps after it, end to end in the
simulator (docs/steps.md, docs/engine.md "Inner loops")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from steps_user_ops import Average, Nudge, Report, Start

import shoal
from shoal import NodeProfile
from shoal.steps import (
    Artifact,
    Collect,
    Distribute,
    Finalize,
    Initialize,
    Iterate,
    MeanEstimator,
    Parallel,
    StepsError,
    to_swarm,
)

pytestmark = pytest.mark.timeout(120)


def _nodes(tmp_path: Path, n: int) -> list[NodeProfile]:
    path = tmp_path / "t.csv"
    pd.DataFrame({"v": [1.0, 3.0]}).to_csv(path, index=False)
    return [NodeProfile(name=f"n{i}", datasets={"t": path}) for i in range(n)]


def _artifact(iterations: int, until: dict[str, object] | None = None) -> Artifact:
    return Artifact(
        steps=[
            Initialize(operation=Start(), distribution=Distribute()),
            Iterate(
                iterations,
                [
                    Parallel(operation=Nudge(), distribution=Collect()),
                    Initialize(operation=Average(), distribution=Distribute()),
                ],
                until=until,
            ),
            Finalize(operation=Report()),
        ],
        dataset="t",
        name="loop",
    )


def test_iterate_repeats_its_steps_then_runs_the_step_after_it(tmp_path: Path) -> None:
    run = shoal.simulate(_artifact(4), nodes=_nodes(tmp_path, 3), executor="inline")
    assert run.ok, run.reason
    # Each pass starts from the previous pass's x (the carry), never from Start's 0 again.
    assert run.globals["history"] == [1.0, 2.0, 3.0, 4.0]
    assert run.globals["final_x"] == 4.0


def test_iterate_until_stops_once_the_metric_holds(tmp_path: Path) -> None:
    until = {"metric": "x", "op": ">=", "value": 2.5}
    run = shoal.simulate(_artifact(10, until), nodes=_nodes(tmp_path, 3), executor="inline")
    assert run.ok, run.reason
    assert run.globals["history"] == [1.0, 2.0, 3.0]  # 3 >= 2.5 ended the loop
    assert run.globals["final_x"] == 3.0


def test_an_estimator_after_an_iterate(tmp_path: Path) -> None:
    """Steps after an Iterate may be anything, e.g. a library estimator's steps."""
    mean = MeanEstimator(feature="v").artifact(dataset="t")
    artifact = Artifact(
        steps=[
            Initialize(operation=Start(), distribution=Distribute()),
            Iterate(
                2,
                [
                    Parallel(operation=Nudge(), distribution=Collect()),
                    Initialize(operation=Average(), distribution=Distribute()),
                ],
            ),
            *mean.steps,
        ],
        dataset="t",
    )
    run = shoal.simulate(artifact, nodes=_nodes(tmp_path, 3), executor="inline")
    assert run.ok, run.reason
    assert run.globals["result"] == pytest.approx(2.0)


def test_iterate_compiles_to_a_loop_and_bad_ones_name_the_fix() -> None:
    plan = to_swarm(_artifact(3, {"metric": "x", "op": ">", "value": 1})).prepare_graph()
    assert [t.loop for t in plan.tasks] == [None, "iterate1", "iterate1", None]
    spec = plan.loops["iterate1"]
    assert spec.times == 3 and spec.until is not None
    assert (spec.until.tag, spec.until.key, spec.until.op) == ("products", "x", ">")
    with pytest.raises(StepsError, match="runs no pass"):
        Iterate(0, [Parallel(operation=Nudge())])
    with pytest.raises(StepsError, match="is not a condition") as info:
        Iterate(2, [Parallel(operation=Nudge())], until={"metric": "x", "op": "=>", "value": 1})
    assert "metric" in (info.value.hint or "")
    # An Iterate round-trips through its JSON spec, like every entity.
    it = Iterate(2, [Parallel(operation=Nudge())], until={"metric": "x", "op": "<", "value": 1})
    assert Iterate.from_spec(it.spec()) == it
