"""Blue-green (seed 001): sibling `random` tasks of one module name split one seeded
permutation of the eligible nodes, fed as events (docs/engine.md, "Shares")."""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import Harness, digest, runs, task

from shoal._engine.messages import RunInstance
from shoal._plan import Limits, Method, ModuleRef, Plan, TaskSpec


def _ref(n: int, name: str, version: str | None) -> ModuleRef:
    return ModuleRef(digest=digest(n), name=name, version=version, kind="source")


def _plan(*tasks: TaskSpec, refs: dict[str, ModuleRef], iterations: int = 1) -> Plan:
    return Plan(
        name="bg",
        modules=refs,
        tasks=tasks,
        edges=(),
        sinks=tuple(t.alias for t in tasks),
        limits=Limits(max_iterations=iterations),
    )


def _blue_green(stable: dict[str, Any], canary: dict[str, Any], iterations: int = 1) -> Plan:
    refs = {"w10": _ref(1, "worker", "1.0.0"), "w11": _ref(1, "worker", "1.1.0")}
    s = task("stable", method=Method.RANDOM, **stable).model_copy(update={"module": "w10"})
    c = task("canary", method=Method.RANDOM, **canary).model_copy(update={"module": "w11"})
    return _plan(s, c, refs=refs, iterations=iterations)


def _nodes(out: list[RunInstance], alias: str) -> set[str]:
    return {r.node_id for r in out if r.alias == alias}


@pytest.mark.parametrize(("n", "want"), [(10, (8, 2)), (7, (6, 1)), (5, (4, 1)), (1, (1, 1))])
def test_fractions_split_every_eligible_node_between_the_versions(
    n: int, want: tuple[int, int]
) -> None:
    h = Harness()
    ids = [f"n{i:02d}" for i in range(n)]
    h.join(*ids)
    out = runs(h.submit(_blue_green({"fraction": 0.8}, {"fraction": 0.2})))
    stable, canary = _nodes(out, "stable"), _nodes(out, "canary")
    assert (len(stable), len(canary)) == want
    if n > 1:
        assert stable.isdisjoint(canary) and stable | canary == set(ids)


def test_the_split_is_seeded_and_kept_across_iterations() -> None:
    def split(seed: int) -> list[tuple[frozenset[str], frozenset[str]]]:
        h = Harness()
        h.join(*[f"n{i:02d}" for i in range(20)])
        h.submit(_blue_green({"fraction": 0.8}, {"fraction": 0.2}, iterations=3), seed=seed)
        h.complete_all()
        per_iter = []
        for it in range(3):
            out = [r for r in runs(h.log) if r.iteration == it]
            per_iter.append((frozenset(_nodes(out, "stable")), frozenset(_nodes(out, "canary"))))
        return per_iter

    one = split(1)
    assert one == split(1)  # the same seed, the same split
    assert len(set(one)) == 1  # every iteration: each node keeps its version
    assert {split(s)[0][1] for s in range(6)} != {one[0][1]}  # the seed matters


def test_counts_take_consecutive_disjoint_shares() -> None:
    h = Harness()
    h.join(*[f"n{i:02d}" for i in range(10)])
    out = runs(h.submit(_blue_green({"count": 3}, {"count": 4})))
    stable, canary = _nodes(out, "stable"), _nodes(out, "canary")
    assert (len(stable), len(canary)) == (3, 4) and stable.isdisjoint(canary)


def test_shares_over_the_eligible_nodes_wrap_around_and_overlap() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    out = runs(h.submit(_blue_green({"count": 2}, {"count": 2})))
    stable, canary = _nodes(out, "stable"), _nodes(out, "canary")
    assert len(stable) == len(canary) == 2 and stable | canary == {"n1", "n2", "n3"}
    assert len(stable & canary) == 1


def test_random_tasks_of_different_modules_sample_independently() -> None:
    """Only one module name makes siblings; other random tasks keep their own sample."""
    refs = {"a": _ref(1, "worker", "1.0.0"), "b": _ref(2, "scorer", "1.0.0")}
    a = task("a", method=Method.RANDOM, fraction=0.5).model_copy(update={"module": "a"})
    b = task("b", method=Method.RANDOM, fraction=0.5).model_copy(update={"module": "b"})
    overlaps = []
    for seed in range(8):
        h = Harness()
        h.join(*[f"n{i:02d}" for i in range(10)])
        out = runs(h.submit(_plan(a, b, refs=refs), seed=seed))
        overlaps.append(bool(_nodes(out, "a") & _nodes(out, "b")))
    assert any(overlaps)
