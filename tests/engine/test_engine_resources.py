"""Placement honours a module's ``resources`` and fails at once on an unknown image.

Fed events only (docs/engine.md, "Resources" and "Unknown image").
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from engine_harness import Harness, finished, module, plan, runs, task

from shoal._engine.capacity import Capacity
from shoal._engine.messages import Instruction, TimerFired
from shoal._plan.resources import format_bytes, parse_bytes, parse_cpu, parse_resources

GI = 2**30


def nodes_of(out: Sequence[Instruction]) -> list[str]:
    return [r.node_id for r in runs(out, "w")]


def test_quantities_parse_as_kubernetes_reads_them() -> None:
    assert parse_bytes("16Gi") == 16 * GI
    assert parse_bytes("512Mi") == 512 * 2**20
    assert parse_bytes("4G") == 4 * 10**9
    assert parse_bytes(1000) == 1000
    assert parse_cpu("500m") == 0.5
    assert parse_cpu(2) == 2.0
    assert format_bytes(16 * GI) == "16Gi"
    need = parse_resources({"cpu": 2, "memory": "4Gi", "gpu": 1})
    assert (need.cpu, need.memory, need.gpu) == (2.0, 4 * GI, 1)
    with pytest.raises(ValueError, match="memory"):
        parse_resources({"memory": "lots"})
    with pytest.raises(ValueError, match="unknown key 'cpus'"):
        parse_resources({"cpus": 2})


def test_resources_admit_only_nodes_that_fit() -> None:
    h = Harness()
    h.join("small", capacity=Capacity(cpu=2, memory=8 * GI, gpu=0))
    h.join("big", capacity=Capacity(cpu=16, memory=64 * GI, gpu=0))
    h.join("gpu", gpu=True, capacity=Capacity(cpu=8, memory=32 * GI, gpu=2, gpu_memory=24 * GI))
    mods = [module(1, resources={"memory": "16Gi"})]
    assert nodes_of(h.submit(plan([task("w")], modules=mods), "a")) == ["big", "gpu"]
    mods = [module(1, resources={"cpu": 12})]
    assert nodes_of(h.submit(plan([task("w")], modules=mods), "b")) == ["big"]
    mods = [module(1, resources={"gpu": 2, "gpu_memory": "16Gi"})]
    assert nodes_of(h.submit(plan([task("w")], modules=mods), "c")) == ["gpu"]
    assert nodes_of(h.submit(plan([task("w", gpu=True)]), "d")) == ["gpu"]


def test_the_placement_error_names_each_nodes_shortfall() -> None:
    h = Harness()
    h.join("small", capacity=Capacity(cpu=2, memory=8 * GI, gpu=0))
    h.join("gpu", gpu=True, capacity=Capacity(cpu=8, memory=32 * GI, gpu=1))
    mods = [module(1, resources={"cpu": 512, "memory": "9000Gi", "gpu": 8})]
    h.submit(plan([task("w")], modules=mods, placement_timeout=5.0))
    waiting = h.engine.waiting("s")
    assert set(waiting) == {"w"}
    assert "has 2 CPUs, needs 512" in waiting["w"]
    h.tick(6.0)
    (done,) = finished(h.step(TimerFired(h.now)))
    reason = done.reason
    assert "node small: has 2 CPUs, needs 512, has 8Gi memory, needs 9000Gi, no GPU" in reason
    assert "node gpu: has 8 CPUs, needs 512" in reason and "has 1 GPU, needs 8" in reason
    assert "within the placement timeout of 5s" in reason


def test_a_node_without_advertised_capacity_is_not_checked() -> None:
    # The simulator's virtual nodes without a profile: resources are not checked.
    h = Harness()
    h.join("n1")
    mods = [module(1, resources={"cpu": 512, "memory": "9000Gi"})]
    assert nodes_of(h.submit(plan([task("w")], modules=mods))) == ["n1"]


def test_bad_resources_fail_the_swarm_at_submission() -> None:
    h = Harness()
    h.join("n1")
    mods = [module(1, resources={"memory": "lots"})]
    (done,) = finished(h.submit(plan([task("w")], modules=mods)))
    assert "module 'm1' has bad resources: memory" in done.reason


def test_an_image_every_connected_node_lacks_fails_at_once() -> None:
    h = Harness()
    h.join("n1", "n2", images=["python"])
    mods = [module(1, image="gpu-env")]
    (done,) = finished(h.submit(plan([task("w")], modules=mods, placement_timeout=60.0)))
    assert "every connected node lacks its image" in done.reason
    assert "nodes n1, n2: lacks image 'gpu-env'" in done.reason


def test_an_unknown_image_waits_while_no_node_is_connected_then_fails_on_the_first_refusal() -> (
    None
):
    h = Harness()
    mods = [module(1, image="gpu-env")]
    assert finished(h.submit(plan([task("w")], modules=mods, placement_timeout=60.0))) == []
    assert h.engine.waiting("s") == {"w": "no node has joined"}
    h.tick()
    (done,) = finished(h.join("n1", images=["python"]))
    assert "lacks image 'gpu-env'" in done.reason


def test_an_image_some_connected_node_has_is_waited_for() -> None:
    h = Harness()
    h.join("n1", images=["python"])
    h.join("busy", images=["gpu-env"], datasets=[])
    mods = [module(1, image="gpu-env", datasets=["mnist"])]
    # busy has the image but not the dataset: the task waits for the timeout.
    assert finished(h.submit(plan([task("w")], modules=mods, placement_timeout=60.0))) == []
    assert "lacks dataset 'mnist'" in h.engine.waiting("s")["w"]
