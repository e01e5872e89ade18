"""Eligibility, placement methods, placement timeouts and shared load."""

from __future__ import annotations

from collections.abc import Sequence

from engine_harness import Harness, fedavg, finished, module, plan, runs, task, wakes

from shoal._engine import Engine
from shoal._engine.messages import Instruction, NodeJoined, SwarmSubmitted
from shoal._plan import Method


def nodes_of(out: Sequence[Instruction], alias: str = "worker") -> list[str]:
    return [r.node_id for r in runs(out, alias)]


def test_any_without_eligible_node_fails_after_the_placement_timeout() -> None:
    h = Harness()
    h.join("n1", datasets=["digits"])
    h.join("n2", datasets=["mnist"], gpu=True)
    h.join("n3", datasets=["mnist"], images=["other"])
    h.join("n4", datasets=["mnist"])
    h.lose("n4")
    p = plan(
        [task("worker", 1, method=Method.ANY, gpu=True, excepted=["n2"])],
        modules=[module(1, datasets=["mnist"], image="torch")],
        placement_timeout=30.0,
    )
    out = h.submit(p)
    assert not runs(out) and wakes(out) == [30.0]
    assert h.timer(29.0) == []
    (done,) = finished(h.timer(30.0))
    assert done.status == "failed"
    reason = done.reason
    assert "task 'worker' (method any) found no eligible node in iteration 0" in reason
    assert "placement timeout of 30s" in reason
    assert "node n1: lacks dataset 'mnist', no GPU" in reason
    assert "node n2: excluded by excepted_ids" in reason
    assert "node n3: no GPU, lacks image 'torch'" in reason
    assert "node n4: disconnected, no GPU" in reason


def test_node_joined_before_the_placement_timeout_rescues_the_task() -> None:
    h = Harness()
    h.join("n1")
    p = plan(
        [task("worker", method=Method.ANY)],
        modules=[module(1, datasets=["mnist"])],
        placement_timeout=30.0,
    )
    assert not runs(h.submit(p))
    h.tick(5)
    assert h.join("n2") == []  # not eligible either
    out = h.join("n3", datasets=["mnist", "other"])
    assert nodes_of(out) == ["n3"]
    assert h.timer(30.0) == []  # the stale placement deadline does nothing
    (done,) = finished(h.run_ok(runs(out)[0].instance_id))
    assert done.status == "succeeded"


def test_reconnect_with_new_datasets_rescues_a_waiting_task() -> None:
    h = Harness()
    h.join("n1")
    p = plan([task("worker")], modules=[module(1, datasets=["mnist"])])
    h.submit(p)
    assert nodes_of(h.join("n1", datasets=["mnist"])) == ["n1"]


def test_placement_timeout_zero_fails_at_once() -> None:
    h = Harness()
    (done,) = finished(h.submit(plan([task("x")], placement_timeout=0)))
    assert done.status == "failed" and done.reason.endswith("no node has joined")
    assert done.iterations == 1


def test_failure_message_stays_readable_with_many_nodes() -> None:
    engine = Engine()
    for i in range(10_000):
        engine.handle(NodeJoined(f"n{i:05d}", 0.0, gpu=i >= 9_998))
    engine.handle(NodeJoined("z1", 0.0, gpu=True))
    worker = task("worker", gpu=True, excepted=["n09998", "n09999", "z1"])
    out = engine.handle(SwarmSubmitted("big", plan([worker], placement_timeout=0), 0.0))
    engine.validate()
    (done,) = finished(out)
    assert "nodes n00000, n00001, n00002, n00003, n00004 and 9993 more: no GPU" in done.reason
    assert "nodes n09998, n09999, z1: excluded by excepted_ids" in done.reason
    assert len(done.reason) < 400


def test_all_places_one_instance_per_eligible_node() -> None:
    h = Harness()
    h.join("b", "a", "c")
    h.join("d", datasets=["x"])
    assert nodes_of(h.submit(fedavg())) == ["a", "b", "c", "d"]


def test_count_and_fraction_cap_all() -> None:
    h = Harness()
    h.join(*[f"n{i}" for i in range(10)])
    assert len(runs(h.submit(plan([task("worker", count=4)]), "s1"))) == 4
    assert len(runs(h.submit(plan([task("worker", fraction=0.3)]), "s2"))) == 3
    assert len(runs(h.submit(plan([task("worker", fraction=0.25)]), "s3"))) == 3  # 2.5 -> 3
    assert len(runs(h.submit(plan([task("worker", fraction=0.01)]), "s4"))) == 1
    # A count above the eligible set is an upper bound, not a requirement.
    assert len(runs(h.submit(plan([task("worker", count=50)]), "s5"))) == 10
    assert len(runs(h.submit(plan([task("w", method=Method.ANY, count=50)]), "s6"))) == 10


def test_any_and_random_default_to_one_node() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    assert len(runs(h.submit(plan([task("w", method=Method.ANY)]), "s1"))) == 1
    assert len(runs(h.submit(plan([task("w", method=Method.RANDOM)]), "s2"))) == 1


def test_any_picks_the_least_loaded_nodes() -> None:
    h = Harness()
    h.join("n1", "n2", "n3", "n4")
    h.submit(plan([task("w", specified=["n1", "n2"])]), "busy")
    out = h.submit(plan([task("w", method=Method.ANY, count=3)]), "s")
    assert nodes_of(out, "w") == ["n1", "n3", "n4"]  # n1 and n2 tie on load; n1 sorts first


def test_multiple_swarms_share_load() -> None:
    h = Harness()
    h.join("n1", "n2", "n3")
    p = plan([task("w", method=Method.ANY)])
    placed = [nodes_of(h.submit(p, f"s{i}"), "w")[0] for i in range(3)]
    assert placed == ["n1", "n2", "n3"]
    h.run_ok("s1/0/w/0/0")  # n2 is free again
    assert nodes_of(h.submit(p, "s3"), "w") == ["n2"]


def test_specified_and_excepted_ids() -> None:
    h = Harness()
    h.join("n1", "n2", "n3", "n4")
    assert nodes_of(h.submit(plan([task("worker", specified=["n2", "n4", "zz"])]), "a")) == [
        "n2",
        "n4",
    ]
    assert nodes_of(h.submit(plan([task("worker", excepted=["n1", "n3"])]), "b")) == ["n2", "n4"]
    both = task("worker", specified=["n1", "n2"], excepted=["n1"])
    assert nodes_of(h.submit(plan([both]), "c")) == ["n2"]


def test_gpu_datasets_and_images() -> None:
    h = Harness()
    h.join("plain")
    h.join("gpu", gpu=True)
    h.join("data", datasets=["mnist", "cifar"])
    h.join("both", datasets=["mnist", "cifar"], gpu=True, images=["python", "torch"])
    h.join("wrong-image", datasets=["mnist", "cifar"], gpu=True, images=["python"])
    assert nodes_of(h.submit(plan([task("worker", gpu=True)]), "a")) == [
        "both",
        "gpu",
        "wrong-image",
    ]
    mods = [module(1, datasets=["mnist", "cifar"])]
    assert nodes_of(h.submit(plan([task("worker")], modules=mods), "b")) == [
        "both",
        "data",
        "wrong-image",
    ]
    mods = [module(1, datasets=["mnist"], image="torch")]
    out = h.submit(plan([task("worker", gpu=True)], modules=mods), "c")
    assert nodes_of(out) == ["both"]


def test_fixed_keeps_its_nodes_across_iterations() -> None:
    def second_iteration(fixed: bool) -> list[str]:
        h = Harness()
        h.join("n1", "n2", "n3", "n4")
        worker = task("worker", method=Method.ANY, count=2, fixed=fixed)
        out = h.submit(fedavg(iterations=2, worker=worker))
        assert nodes_of(out) == ["n1", "n2"]
        for iid in h.live():
            h.run_ok(iid)
        # Make n1 and n2 the busiest nodes before iteration 1 is placed.
        h.submit(plan([task("hog", specified=["n1", "n2"])]), "hog")
        (agg,) = h.live("s")
        return nodes_of(h.run_ok(agg))

    assert second_iteration(fixed=True) == ["n1", "n2"]
    assert second_iteration(fixed=False) == ["n3", "n4"]


def test_fixed_waits_for_its_own_nodes() -> None:
    h = Harness()
    h.join("n1", "n2")
    worker = task("worker", method=Method.ANY, fixed=True)
    agg = task("agg", 2, method=Method.ANY, specified=["n2"])
    (w,) = runs(h.submit(fedavg(iterations=2, worker=worker, agg=agg)))
    assert w.node_id == "n1"
    (a,) = runs(h.run_ok(w.instance_id))
    h.lose("n1")
    out = h.run_ok(a.instance_id)
    assert not runs(out) and wakes(out) == [60.0]
    (done,) = finished(h.timer(60.0))
    assert "iteration 1" in done.reason
    assert "node n1: disconnected" in done.reason
    assert "node n2: not pinned by fixed placement" in done.reason


def test_random_is_seeded_and_reproducible() -> None:
    def placed(seed: int, swarm_id: str = "s") -> list[str]:
        h = Harness()
        h.join(*[f"n{i:02d}" for i in range(40)])
        out = h.submit(plan([task("w", method=Method.RANDOM, count=5)]), swarm_id, seed)
        return nodes_of(out, "w")

    assert placed(1) == placed(1)
    assert len(set(placed(1))) == 5
    draws = {tuple(placed(s)) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    assert placed(1, "other") != placed(1) or placed(2, "other") != placed(2)


def test_min_results_above_the_placed_count_fails() -> None:
    h = Harness()
    h.join("n1", "n2")
    (done,) = finished(h.submit(plan([task("worker", min_results=3)])))
    assert done.status == "failed"
    assert "needs min_results=3" in done.reason and "only 2 instance(s)" in done.reason
