"""The seeds' examples, written as the seeds write them, compile to the expected plans."""

from __future__ import annotations

from types import ModuleType

import pytest

from shoal import Plan, ShoalError, SwarmValidationError, load_plan


def _placement(plan: Plan, alias: str) -> tuple[str, int | None, float | None]:
    p = plan.task(alias).placement
    return p.method.value, p.count, p.fraction


def _roundtrip(plan: Plan) -> Plan:
    again = load_plan(plan.to_json())
    assert again == plan
    return again


def test_seed000_fan_in(seeds: dict[str, ModuleType]) -> None:
    plan = _roundtrip(seeds["000"].FLSwarm().prepare_graph())
    assert [t.alias for t in plan.tasks] == ["m1", "m2", "m3"]
    assert set(plan.edges) == {("m1", "m3"), ("m2", "m3")}
    assert plan.sinks == ("m3",)
    assert _placement(plan, "m3") == ("any", 1, None)
    assert _placement(plan, "m1") == ("all", None, None)
    kinds = {plan.modules[plan.task(a).module].kind for a in ("m1", "m2")}
    assert kinds == {"file", "package"}
    assert plan.modules[plan.task("m1").module].image == "fl-pytorch-mnist:latest"


def test_seed000_fan_out_returns_two_sinks(seeds: dict[str, ModuleType]) -> None:
    plan = _roundtrip(seeds["000"].SplitSwarm().prepare_graph())
    assert set(plan.edges) == {("m3", "m4"), ("m3", "m5")}
    assert plan.sinks == ("m4", "m5")


def test_seed000_module_options_make_the_implicit_task(seeds: dict[str, ModuleType]) -> None:
    plan = seeds["000"].WorkerModuleSwarm().prepare_graph()
    assert [t.alias for t in plan.tasks] == ["worker"]
    assert _placement(plan, "worker") == ("any", 4, None)
    assert plan.sinks == ("worker",)


def test_seed001_federated_learning_swarm(seeds: dict[str, ModuleType]) -> None:
    plan = _roundtrip(seeds["001"].FederatedLearningSwarm().prepare_graph())
    assert [t.alias for t in plan.tasks] == ["worker", "aggregator", "scheduler"]
    assert plan.edges == (("worker", "aggregator"), ("aggregator", "scheduler"))
    assert plan.sinks == ("scheduler",)
    assert _placement(plan, "worker") == ("all", None, None)
    assert _placement(plan, "aggregator") == ("any", 1, None)
    worker = plan.modules[plan.task("worker").module]
    assert (worker.kind, worker.datasets, worker.image) == ("package", ("mnist",), "pytorch")


def test_seed001_module_with_name_and_task_wrapper(seeds: dict[str, ModuleType]) -> None:
    module, task = seeds["001"].worker_module, seeds["001"].worker_task
    assert module.name == "fl_worker" and module.datasets == ("mnist",)
    assert (task.method, task.maximum, task.gpu) == ("all", -1, False)


@pytest.mark.parametrize("cls", ["FedAvgSwarm", "ExperimentalSwarm"])
def test_seed001_swarms_without_execute_get_a_clear_error(
    seeds: dict[str, ModuleType], cls: str
) -> None:
    with pytest.raises(SwarmValidationError) as e:
        getattr(seeds["001"], cls)().prepare_graph()
    assert "does not define execute()" in str(e.value)


def test_seed002_quick_example(seeds: dict[str, ModuleType]) -> None:
    swarm = seeds["002"].MySwarm()
    plan = _roundtrip(swarm.prepare_graph())
    assert plan.name == "federated_mnist"
    assert plan.edges == (("workers", "aggregator"),)
    assert plan.sinks == ("aggregator",)
    assert _placement(plan, "aggregator") == ("any", 1, None)
    assert _placement(plan, "workers") == ("all", None, None)
    assert swarm.get_global("epochs") == 10 and swarm.get_global("missing", 3) == 3
    assert set(plan.globals) == {"epochs", "batch_size"}
    # one module shared by both tasks: one bundle
    assert len(plan.modules) == 1


def test_seed002_packaged_source_module(seeds: dict[str, ModuleType]) -> None:
    plan = _roundtrip(seeds["002"].PackagedSwarm().prepare_graph())
    (ref,) = plan.modules.values()
    assert ref.kind == "source" and ref.requirements == ("numpy",)
    assert ref.resources == {"cpu": 2, "memory": "4Gi"}
    assert plan.task("worker").network == "overlay"
    assert plan.networks == {"overlay": "overlay"}
    assert _placement(plan, "worker") == ("all", 10, None)


def test_seed002_chain_parallel_and_dynamic(seeds: dict[str, ModuleType]) -> None:
    chain = seeds["002"].ChainSwarm().prepare_graph()
    assert chain.edges == (("trainer", "aggregator"), ("aggregator", "scheduler"))
    assert chain.sinks == ("scheduler",)
    parallel = seeds["002"].ParallelSwarm().prepare_graph()
    assert len(parallel.tasks) == 6 and len(parallel.edges) == 5
    assert {d for _, d in parallel.edges} == {"aggregator"}
    dynamic = seeds["002"].DynamicSwarm().prepare_graph()
    assert {u for u, _ in dynamic.edges} == {f"worker_{i}" for i in range(5)}
    assert dynamic.sinks == ("aggregator",)


def test_seed002_fl_and_mapreduce(seeds: dict[str, ModuleType]) -> None:
    fl = seeds["002"].FederatedLearning().prepare_graph()
    assert fl.name == "fl_experiment"
    assert fl.edges == (("trainers", "aggregator"), ("aggregator", "scheduler"))
    mr = seeds["002"].MapReduce().prepare_graph()
    assert mr.name == "mapreduce_job" and mr.sinks == ("reducer",)
    assert len(mr.edges) == 10 and _placement(mr, "reducer") == ("any", 1, None)


def test_seed002_placement_options(seeds: dict[str, ModuleType]) -> None:
    plan = seeds["002"].RecoverySwarm().prepare_graph()
    any3 = plan.task("worker").placement
    assert (any3.method.value, any3.count, any3.excepted_ids) == ("any", 3, ("failed_node_1",))
    half = plan.task("half").placement
    assert (half.fraction, half.gpu) == (0.5, True)
    local = plan.task("local").placement
    assert local.fixed and local.specified_ids == ("node1", "node2")


def test_seed002_globals_and_networks(seeds: dict[str, ModuleType]) -> None:
    plan = seeds["002"].StatefulSwarm().prepare_graph()
    # Plain JSON in the plan since schema version 3 (issue 16, point 10).
    assert plan.globals["hyperparameters"] == {"learning_rate": 0.01, "momentum": 0.9}
    assert plan.globals["model_weights"] == [0.0] * 4
    net = seeds["002"].NetworkedSwarm().prepare_graph()
    assert net.networks == {"backend": "bridge", "frontend": "overlay"}


def test_task_called_outside_execute_is_a_clear_error(seeds: dict[str, ModuleType]) -> None:
    with pytest.raises(ShoalError, match=r"outside Swarm\.execute"):
        seeds["001"].worker_task()


def test_maximum_minus_one_means_every_eligible_node_for_any_and_random() -> None:
    from pathlib import Path

    from shoal import Module, Swarm, Task

    worker = Path(__file__).parent / "seeds" / "modules" / "worker.py"

    class S(Swarm):
        def execute(self) -> list[Task]:
            return [
                Task(Module(worker), method=m, maximum=-1, alias=m)()
                for m in ("all", "any", "random")
            ]

    plan = S().prepare_graph()
    assert _placement(plan, "all") == ("all", None, None)
    assert _placement(plan, "any") == ("any", None, 1.0)
    assert _placement(plan, "random") == ("random", None, 1.0)
