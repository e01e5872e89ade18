"""Inner loops end to end in the simulator (``shoal.simulate``): real task code reads
what the engine let it see in each pass (docs/engine.md, "Inner loops")."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import task_module

import shoal
from shoal import Swarm, SwarmValidationError, Task

pytestmark = [pytest.mark.timeout(120)]

# init stores w0 = 0; each pass, every train instance adds 1 to the w it sees (pass 0:
# init's w0; later passes: the previous pass's agg's w), agg averages them into w (and
# the score until reads), so after pass p, w == p + 1; report stores what it saw.
INIT = 'self.world.results.add("w0", 0.0)'
TRAIN = """
got = self.world.results.select("w") or self.world.results.select("w0")
(w,) = set(got.values())
self.world.results.add("delta", w + 1.0)
"""
AGG = """
got = self.world.results.select("delta")
w = sum(got.values()) / len(got)
self.world.results.add("w", w)
self.world.results.add("score", {"w": w, "n": len(got)})
self.world.globals["passes"] = self.world.globals.get("passes", 0) + 1
"""
REPORT = """
self.world.results.add("final", dict(self.world.results.select("w")))
"""


class Looped(Swarm):
    max_iterations = 1

    def __init__(self, times: int, until: dict[str, Any] | None = None) -> None:
        self.init = Task(task_module(INIT, "Init"), alias="init", method="any")
        self.train = Task(task_module(TRAIN, "Train"), alias="train", loop="fit")
        self.agg = Task(task_module(AGG, "Agg"), alias="agg", method="any", loop="fit")
        self.report = Task(task_module(REPORT, "Report"), alias="report", method="any")
        self.add_loop("fit", times=times, until=until)

    def execute(self) -> Task:
        return self.report(self.agg(self.train(self.init())))


def final_w(run: shoal.SimulationRun) -> float:
    (final,) = run.results.select("final", alias="report", iteration=0).values()
    (w,) = final.values()
    return float(w)


def test_a_loop_runs_times_passes_carrying_the_exit_and_the_next_task_sees_the_last() -> None:
    run = shoal.simulate(Looped(times=4), nodes=3, executor="inline")
    assert run.ok, run.reason
    assert final_w(run) == 4.0  # four passes, each +1 on what the previous pass made
    assert run.globals["passes"] == 4


def test_until_stops_the_loop_once_the_exit_result_holds() -> None:
    until = {"tag": "score", "key": "w", "op": ">=", "value": 2.5}
    run = shoal.simulate(Looped(times=10, until=until), nodes=3, executor="inline")
    assert run.ok, run.reason
    assert final_w(run) == 3.0  # passes made 1, 2, 3: 3 >= 2.5 stopped it
    assert run.globals["passes"] == 3


def test_a_failing_task_inside_a_loop_fails_the_run_with_its_reason() -> None:
    class Broken(Looped):
        def __init__(self) -> None:
            super().__init__(times=3)
            bad = TRAIN + '\nif self.world.node_id == "node-00001":\n    raise RuntimeError("x")'
            self.train = Task(task_module(bad, "Train"), alias="train", loop="fit")

    run = shoal.simulate(Broken(), nodes=3, executor="inline", raise_on_failure=False)
    assert not run.ok
    assert "task 'train' failed in iteration 0" in run.reason
    assert "RuntimeError: x" in run.reason and "node-00001" in run.reason


def test_bad_loop_declarations_name_the_fix() -> None:
    class Undeclared(Looped):
        def __init__(self) -> None:
            super().__init__(times=2)
            self.agg = Task(task_module(AGG, "Agg"), alias="agg", method="any", loop="fti")

    with pytest.raises(SwarmValidationError) as info:
        Undeclared().prepare_graph()
    text = str(info.value)
    assert "names loop 'fti', which the swarm does not declare" in text
    assert 'self.add_loop("fti", times=...)' in text

    with pytest.raises(SwarmValidationError, match=r"times=0 is not an int >= 1"):
        Looped(times=0).prepare_graph()
    with pytest.raises(SwarmValidationError, match=r"until=.* is invalid"):
        Looped(times=2, until={"tag": "s", "op": "=>", "value": 1}).prepare_graph()

    class Detour(Looped):
        def execute(self) -> Task:
            # report sits outside the loop on a path train -> report -> agg.
            t = self.train(self.init())
            return self.agg([t, self.report(t)])

    with pytest.raises(SwarmValidationError, match=r"task 'report' is outside the loop"):
        Detour(times=2).prepare_graph()


def test_the_plan_carries_the_loop() -> None:
    plan = Looped(times=5, until={"tag": "score", "op": "<", "value": 0.1}).prepare_graph()
    assert plan.loops["fit"].times == 5 and plan.loops["fit"].until is not None
    assert plan.task("train").loop == "fit" and plan.task("report").loop is None
