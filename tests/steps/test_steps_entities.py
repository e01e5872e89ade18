"""Entities are JSON code-as-data; unsupported steps and bad distributions fail early."""

from __future__ import annotations

import json

import pytest

from shoal.steps import (
    DP,
    Artifact,
    Collect,
    CountEstimator,
    Distribute,
    Entity,
    Finalize,
    GroupCountEstimator,
    Initialize,
    Iterate,
    MeanEstimator,
    Operation,
    Parallel,
    QueryFeature,
    RoundRobin,
    Sequential,
    StepsError,
)
from shoal.steps._compile import to_swarm

pytestmark = pytest.mark.timeout(30)


def _artifact() -> Artifact:
    query = (QueryFeature("x") < 2) & ~QueryFeature("g").isin(["b"])
    return MeanEstimator(feature="x", query=query).artifact(dataset="t", initiator="n1")


def test_artifact_round_trips_through_json() -> None:
    artifact = _artifact()
    text = json.dumps(artifact.spec())  # plain JSON: no pickle anywhere
    again = Entity.from_spec(json.loads(text))
    assert again == artifact
    assert again.spec() == artifact.spec()
    assert json.loads(text)["kind"] == "shoal._steps._artifact.Artifact"


def test_a_name_collision_is_an_error() -> None:
    class Dup(Operation):
        pass

    with pytest.raises(StepsError) as info:

        class Dup(Operation):  # type: ignore[no-redef]
            pass

    assert info.value.code == "steps.entity"
    assert "two entity classes" in str(info.value)


def test_an_unknown_kind_is_an_error_naming_it() -> None:
    with pytest.raises(StepsError, match=r"no entity class is named 'nope\.Op'"):
        Entity.from_spec({"kind": "nope.Op", "params": {}})
    with pytest.raises(StepsError, match="not an entity spec"):
        Entity.from_spec([1, 2])


def test_iterate_is_declared_by_keyword_or_position_and_inside_an_artifact() -> None:
    op = CountEstimator().artifact("t").steps[0].operation
    by_name = Iterate(iterations=3, steps=[Parallel(operation=op)])
    assert Iterate(3, [Parallel(operation=op)]) == by_name
    art = Artifact(steps=[by_name, Parallel(operation=op)], dataset="t")
    assert [type(s).__name__ for s, _ in art.flat_steps()] == ["Parallel", "Parallel"]
    assert [at for _, at in art.flat_steps()] == [0, None]
    assert Artifact.from_spec(json.loads(json.dumps(art.spec()))) == art


def test_sequential_and_round_robin_compile_to_a_chain_and_a_ring() -> None:
    op = CountEstimator().artifact("t").steps[0].operation
    art = Artifact(
        steps=[Sequential(operation=op), RoundRobin(operation=op, rounds=2)], dataset="t"
    )
    chain, ring = to_swarm(art).step_tasks
    assert (chain.order, ring.order, ring.rounds) == ("chain", "ring", 2)


def test_distributions_must_fit_the_steps() -> None:
    op = CountEstimator().artifact("t").steps[0].operation
    with pytest.raises(StepsError, match="Distribute"):
        Artifact(steps=[Parallel(operation=op, distribution=Distribute())], dataset="t")
    with pytest.raises(StepsError, match="Collect"):
        Artifact(steps=[Parallel(operation=op, distribution=Collect())], dataset="t")
    with pytest.raises(StepsError, match="dataset"):
        Artifact(steps=[Parallel(operation=op)])
    with pytest.raises(StepsError, match="no step"):
        Artifact(steps=[])


def test_privacy_specs_are_checked_at_declaration() -> None:
    assert CountEstimator(privacy={"epsilon": 1.0}).privacy == DP(epsilon=1.0)
    bad = [
        lambda: MeanEstimator(feature="x", privacy=DP(epsilon=1.0)),  # no bounds
        lambda: GroupCountEstimator(by="g", privacy=DP(epsilon=1.0)),  # keys not declared
        lambda: DP(mechanism="gaussian", epsilon=1.0),  # no delta
        lambda: DP(epsilon=0.0),
        lambda: DP(epsilon=1.0, lower=2, upper=1),
        lambda: CountEstimator(privacy="laplace"),
    ]
    for make in bad:
        with pytest.raises(StepsError) as info:
            make()
        assert info.value.code == "steps.privacy"
    spec = MeanEstimator(feature="x", secure=True, privacy=DP(epsilon=1, lower=0, upper=9)).spec()
    again = Entity.from_spec(spec)
    assert again.privacy == DP(epsilon=1, lower=0, upper=9) and again.secure  # type: ignore[attr-defined]


def test_compiles_to_tasks_on_the_initiator_and_all_nodes() -> None:
    swarm = to_swarm(_artifact())
    parallel, final = swarm.step_tasks
    assert parallel.method == "all"
    assert (final.method, final.maximum, list(final.specified_ids)) == ("any", 1, ["n1"])
    assert list(parallel.module.datasets) == ["t"]
    assert list(final.module.datasets) == []
    assert isinstance(Initialize(operation=final_op()), Initialize)
    assert isinstance(Finalize(operation=final_op()), Finalize)


def final_op() -> Operation:
    return _artifact().steps[1].operation


def test_an_operation_in_a_package_module_is_refused_at_compile_time() -> None:
    # Only a top-level module can be copied into the step's bundle.
    op_cls = type("Nested", (Operation,), {"__module__": "pkg.sub"})
    with pytest.raises(StepsError, match=r"top-level \.py module"):
        to_swarm(Artifact(steps=[Finalize(operation=op_cls())], name="nested"))
