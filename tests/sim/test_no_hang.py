"""Nothing hangs: a task without a timeout gets the run's default task timeout, which is
finite (DESIGN §3 Failure); a stuck task is reported as the user's task on its node."""

from __future__ import annotations

import re
import time

from helpers import ROOT, task_module

import shoal
from shoal import Module, Swarm, Task

SLEEPS_ON_NODE_1 = """
if self.world.node_id == "node-00001":
    time.sleep(10**6)  # never returns, and the task declares no timeout
self.world.results.add("ok", 1)
"""


class MySwarm(Swarm):
    """The README's ``MySwarm``: a worker task on every node, no timeout declared."""

    max_iterations = 1

    def __init__(self, module: Module | None = None) -> None:
        self.worker = Task(module or task_module("pass", "Worker"), alias="worker")

    def execute(self) -> Task:
        return self.worker()


def _readme_federation_snippet() -> str:
    """The README's ``shoal.testing.Federation`` example, as written."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (block,) = [b for b in blocks if "Federation(" in b and 'inject("hang"' in b]
    return block


def test_the_readme_federation_hang_snippet_fails_on_the_virtual_clock_at_once() -> None:
    scope: dict[str, object] = {"MySwarm": MySwarm}
    t0 = time.monotonic()
    exec(_readme_federation_snippet(), scope)
    assert time.monotonic() - t0 < 10  # 600 virtual seconds, not real ones
    run = scope["run"]
    assert isinstance(run, shoal.SimulationRun)
    assert run.status == "failed"
    (failure,) = run.failures
    assert (failure.node_id, failure.alias, failure.kind) == ("node-00003", "worker", "timeout")
    assert "task 'worker' on node node-00003" in failure.error
    assert "default task timeout" in failure.error
    assert "task 'worker' on node node-00003" in run.reason
    assert "bug in shoal" not in run.reason
    fed = scope["fed"]
    assert isinstance(fed, shoal.testing.Federation) and fed.clock.now() >= 600


def test_federation_takes_a_run_default_task_timeout() -> None:
    fed = shoal.testing.Federation(nodes=2)
    fed.inject("hang", node="node-00001", task="worker")
    run = fed.run(MySwarm(), task_timeout=30)
    assert run.status == "failed" and "timed out after 30s" in run.failures[0].error
    assert 30 <= fed.clock.now() < 600


def test_simulate_fails_a_task_that_sleeps_forever_at_the_run_default_naming_node_and_task() -> (
    None
):
    seen: list[tuple[str, str, float, float | None]] = []

    def watch(running: list) -> None:  # type: ignore[type-arg]
        seen.extend((r.alias, r.node_id, r.age_s, r.timeout_s) for r in running)

    t0 = time.monotonic()
    module = task_module(SLEEPS_ON_NODE_1, "Worker")
    run = shoal.simulate(
        MySwarm(module), nodes=3, workers=2, task_timeout=2, watch=watch, raise_on_failure=False
    )
    assert time.monotonic() - t0 < 60
    assert run.status == "failed"
    (failure,) = run.failures
    assert (failure.node_id, failure.alias, failure.kind) == ("node-00001", "worker", "timeout")
    assert "timed out after 2s" in failure.error
    assert "task 'worker' on node node-00001" in failure.error
    # The live display's feed named the stuck instance, its node and its age.
    stuck = [s for s in seen if s[1] == "node-00001"]
    assert stuck and max(s[2] for s in stuck) >= 1.0 and stuck[-1][3] == 2.0


def test_simulate_refuses_a_bad_task_timeout() -> None:
    for bad in (0, -1, float("inf")):
        try:
            shoal.simulate(MySwarm(), nodes=1, task_timeout=bad)
        except shoal.ShoalError as e:
            assert e.code == "sim.task_timeout" and "seconds > 0" in str(e)
        else:
            raise AssertionError(f"task_timeout={bad} was accepted")
