"""Driver conformance: one list of scenarios, run through both drivers of the engine.

The simulator (``shoal.testing.Federation``: the simulation driver, inline executor,
virtual clock) and the coordinator (``CoordFederation``: the coordinator driver and its
store, in-process nodes, virtual clock) must give every scenario the same outcome:
status, iterations, failures (task, node, kind, error) and final globals. Each scenario
also states the outcome it expects, so two drivers that agree on a wrong answer fail.
Both drivers check every engine invariant after every event (``validate=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shoal import Module, Swarm, Task
from shoal.testing import Federation

from .coord_federation import CoordFederation

pytestmark = pytest.mark.timeout(60)


def src(body: str, name: str) -> Module:
    """A source-text module whose Task.run() is ``body``."""
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    code = (
        "from shoal.runtime import Task\n\n"
        f"class T(Task):\n    def run(self):\n{indented}\n\n"
        "def main():\n    T().run()\n"
    )
    return Module(code, name=name)


class Graph(Swarm):
    """``rows``: (alias, module, Task options, upstream aliases)."""

    def __init__(
        self,
        rows: list[tuple[str, Module, dict[str, Any], list[str]]],
        max_iterations: int | None = 1,
        placement_timeout: float = 60.0,
        loops: dict[str, tuple[int, dict[str, Any] | None]] | None = None,
    ) -> None:
        self.max_iterations = max_iterations
        self.placement_timeout = placement_timeout
        self._rows = rows
        self._tasks = {a: Task(m, alias=a, **o) for a, m, o, _ in rows}
        for name, (times, until) in (loops or {}).items():
            self.add_loop(name, times=times, until=until)

    def execute(self) -> list[Task]:
        ups = {a for _, _, _, u in self._rows for a in u}
        for alias, _, _, upstream in self._rows:
            self._tasks[alias]([self._tasks[u] for u in upstream])
        return [t for a, t in self._tasks.items() if a not in ups]


WORKER = src(
    """
i = int(self.world.node_id.split("-")[1])
base = self.world.globals.get("base", 0)
self.world.results.add("v", base + i)
""",
    "worker",
)
MEAN = src(
    """
got = self.world.results.select("v")
self.world.globals["base"] = sum(got.values()) / len(got)
self.world.globals["seen"] = sorted(got)
""",
    "mean",
)


# An inner loop: each pass, every node adds 1 to the w of the previous pass's agg (the
# carry; 0 in pass 0), and agg averages them into w.
LOOP_TRAIN = src(
    """
got = self.world.results.select("w")
self.world.results.add("v", next(iter(got.values()), 0.0) + 1.0)
""",
    "loop_train",
)
LOOP_AGG = src(
    """
got = self.world.results.select("v")
self.world.results.add("w", sum(got.values()) / len(got))
self.world.globals["w"] = sum(got.values()) / len(got)
self.world.globals["passes"] = self.world.globals.get("passes", 0) + 1
""",
    "loop_agg",
)


def looped(until: dict[str, Any] | None = None) -> Swarm:
    return Graph(
        [
            ("train", LOOP_TRAIN, {"method": "all", "loop": "fit"}, []),
            ("agg", LOOP_AGG, {"method": "any", "loop": "fit"}, ["train"]),
            ("after", src('self.world.globals["after"] = True', "after"), {}, ["agg"]),
        ],
        loops={"fit": (10, until)},
    )


def fedavg() -> Swarm:
    return Graph(
        [("worker", WORKER, {"method": "all"}, []), ("agg", MEAN, {}, ["worker"])],
        max_iterations=3,
    )


@dataclass
class Scenario:
    name: str
    swarm: Callable[[], Swarm]
    faults: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    nodes: int = 3
    status: str = "succeeded"
    iterations: int | None = None
    # (alias, node, kind, error substring) of every failed instance, in any order
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    reason: str = ""  # a substring of the swarm's reason
    globals: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario(
        "fedavg_three_rounds",
        fedavg,
        iterations=3,
        # base: mean(0,1,2)=1, then mean(1,2,3)=2, then mean(2,3,4)=3
        globals={"base": 3.0, "seen": ["node-00000", "node-00001", "node-00002"]},
    ),
    Scenario(
        "a_raise_is_retried_on_another_node",
        lambda: Graph([("worker", WORKER, {"method": "any", "maximum": 2, "retries": 1}, [])]),
        faults=[("raise", {"node": "node-00000", "task": "worker"})],
        failures=[("worker", "node-00000", "error", "injected fault: raise")],
    ),
    Scenario(
        "a_crash_without_retries_fails_the_swarm",
        lambda: Graph([("worker", WORKER, {"method": "all"}, []), ("agg", MEAN, {}, ["worker"])]),
        faults=[("crash", {"node": "node-00002", "task": "worker", "attempt": None})],
        status="failed",
        failures=[("worker", "node-00002", "crash", "injected fault: crash")],
        reason="worker",
    ),
    Scenario(
        "a_hung_instance_times_out_and_min_results_tolerates_it",
        lambda: Graph(
            [
                ("worker", WORKER, {"method": "all", "timeout": 30, "min_results": 2}, []),
                ("agg", MEAN, {}, ["worker"]),
            ]
        ),
        faults=[("hang", {"node": "node-00001", "task": "worker"})],
        failures=[("worker", "node-00001", "timeout", "timed out after 30s")],
        globals={"base": 1.0, "seen": ["node-00000", "node-00002"]},
    ),
    Scenario(
        "a_hung_instance_without_a_timeout_fails_at_the_default_task_timeout",
        fedavg,
        faults=[("hang", {"node": "node-00001", "task": "worker"})],
        status="failed",
        iterations=1,
        failures=[
            (
                "worker",
                "node-00001",
                "timeout",
                "timed out after 600s, the run's default task timeout: task 'worker' on "
                "node node-00001 did not return",
            )
        ],
        reason="task 'worker' on node node-00001",
    ),
    Scenario(
        "stop_swarm_ends_the_run_after_its_iteration",
        lambda: Graph(
            [
                ("worker", WORKER, {"method": "all"}, []),
                (
                    "stopper",
                    src("if self.world.iteration == 1:\n    self.world.stop_swarm()", "stopper"),
                    {},
                    ["worker"],
                ),
            ],
            max_iterations=None,
        ),
        iterations=2,
        reason="stopped by task stopper",
    ),
    Scenario(
        "schedule_next_iter_narrows_a_task",
        lambda: Graph(
            [
                ("worker", WORKER, {"method": "all"}, []),
                (
                    "sched",
                    src(
                        'self.world.schedule_next_iter(["node-00001"], "worker")\n'
                        'self.world.globals["n"] = len(self.world.results.select("v"))',
                        "sched",
                    ),
                    {},
                    ["worker"],
                ),
            ],
            max_iterations=2,
        ),
        iterations=2,
        globals={"n": 1},
    ),
    Scenario(
        "schedule_next_iter_with_an_unknown_alias_fails_the_caller",
        lambda: Graph(
            [("sched", src('self.world.schedule_next_iter(["node-00001"], "nope")', "s2"), {}, [])]
        ),
        nodes=1,
        status="failed",
        failures=[("sched", "node-00000", "error", "which is not in the swarm")],
    ),
    Scenario(
        "an_inner_loop_runs_its_passes_then_the_task_after_it",
        looped,
        iterations=1,
        globals={"w": 10.0, "passes": 10, "after": True},
    ),
    Scenario(
        "an_inner_loop_until_condition_stops_it_early",
        lambda: looped({"tag": "w", "op": ">=", "value": 3}),
        iterations=1,
        globals={"w": 3.0, "passes": 3, "after": True},
    ),
    Scenario(
        "a_crash_inside_an_inner_loop_fails_the_swarm_with_its_node",
        looped,
        faults=[("crash", {"node": "node-00001", "task": "train", "attempt": None})],
        status="failed",
        failures=[("train", "node-00001", "crash", "injected fault: crash")],
        reason="task 'train' failed in iteration 0",
    ),
    Scenario(
        "no_node_has_the_dataset",
        lambda: Graph(
            [("worker", Module(WORKER.python_program, name="w3", datasets=["missing"]), {}, [])],
            placement_timeout=20,
        ),
        status="failed",
        reason="lacks dataset 'missing'",
    ),
]


def _sim(s: Scenario) -> Any:
    fed = Federation(nodes=s.nodes)
    for kind, where in s.faults:
        fed.inject(kind, **where)  # type: ignore[arg-type]
    return fed.run(s.swarm())


def _coord(s: Scenario, root: Path) -> Any:
    fed = CoordFederation(nodes=s.nodes, root=root)
    for kind, where in s.faults:
        fed.inject(kind, **where)
    return fed.run(s.swarm())


def _outcome(run: Any, keys: list[str]) -> dict[str, Any]:
    get = run.global_ if hasattr(run, "global_") else run.globals.get
    return {
        "status": run.status,
        "iterations": run.iterations,
        "failures": sorted((f.alias, f.node_id, f.kind, f.error) for f in run.failures),
        "globals": {k: get(k) for k in keys},
    }


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_both_drivers_agree_and_are_right(s: Scenario, tmp_path: Path) -> None:
    sim, coord = _sim(s), _coord(s, tmp_path)
    keys = sorted(s.globals)
    a, b = _outcome(sim, keys), _outcome(coord, keys)
    assert a == b, f"the drivers disagree on {s.name}:\n  simulator:   {a}\n  coordinator: {b}"
    assert a["status"] == s.status, (a, sim.reason)
    if s.iterations is not None:
        assert a["iterations"] == s.iterations
    assert len(a["failures"]) == len(s.failures), a["failures"]
    for (alias, node, kind, error), want in zip(a["failures"], sorted(s.failures), strict=True):
        assert (alias, node, kind) == want[:3]
        assert want[3] in error, (error, want)
    assert a["globals"] == s.globals
    assert s.reason in sim.reason and s.reason in coord.reason, (sim.reason, coord.reason)
    for f in sim.failures:  # every failure has a story, told the same way by both
        story_sim = sim.story(f.instance_id)
        match = [
            g
            for g in coord.failures
            if (g.alias, g.node_id, g.attempt) == (f.alias, f.node_id, f.attempt)
        ]
        story_coord = coord.story(match[0].instance_id)
        events = [line.split(" ", 2)[2].split(":")[0] for line in story_sim]
        assert events == [line.split(" ", 2)[2].split(":")[0] for line in story_coord]
