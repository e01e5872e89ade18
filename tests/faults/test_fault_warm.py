"""Warm task processes (issue #21) on real agents: reuse within one swarm and module,
nothing carried to another swarm, the opt-outs, and the faults a warm process must
survive (killed mid-instance, hung, its agent killed).

Each task records a token made when its module was imported (``PROCESS``): the same
token in two instances means they ran in one process. The agents use the node's default
executor (bubblewrap here, a plain process elsewhere).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from deploy_harness import Coordinator, results, submit
from fault_harness import Fed, Node, task_processes
from helpers import poll_for

from shoal import Module, Swarm, Task

pytestmark = pytest.mark.timeout(120)

# Module code: the token of its process, what an earlier instance may have left in it
# (module globals, a file in its temporary folder, an environment variable), then it
# leaves the same behind under its own swarm's name.
PROBE = """
import os, tempfile, time, uuid
from pathlib import Path
from shoal.runtime import Task

PROCESS = uuid.uuid4().hex
SEEN = []


class Probe(Task):
    def run(self):
        w = self.world
        tmp = Path(tempfile.gettempdir())
        self.world.results.add("process", PROCESS)
        self.world.results.add(
            "left",
            {
                "globals": list(SEEN),
                "files": sorted(p.name for p in tmp.glob("left-by-*")),
                "env": os.environ.get("SHOAL_TEST_LEFT"),
            },
        )
        fault = w.globals.get("fault")
        if fault and w.iteration == 1 and not self.local.get_state("faulted", False):
            self.local.set_state("faulted", True)  # once: the retry runs normally
            if fault == "kill":
                os.kill(os.getpid(), 9)
            if fault == "hang":
                time.sleep(600)
        if w.globals.get("pause"):
            time.sleep(float(w.globals["pause"]))
        SEEN.append(w.swarm_id)
        (tmp / f"left-by-{w.swarm_id}").write_text("x")
        os.environ["SHOAL_TEST_LEFT"] = w.swarm_id


def main():
    Probe().run()
"""


class Probed(Swarm):
    """``probe`` on ``node`` for ``iterations`` (``fault`` at iteration 1, attempt 0)."""

    def __init__(
        self,
        node: str,
        iterations: int = 3,
        fault: str | None = None,
        fresh: bool = False,
        timeout: float | None = None,
        pause: float = 0.0,
    ) -> None:
        super().__init__()
        self.max_iterations = iterations
        self.set_global("fault", fault)
        self.set_global("pause", pause)
        module = Module(PROBE, name="probe", fresh_process=fresh)
        self.probe = Task(module, alias="probe", specified_ids=[node], retries=1, timeout=timeout)

    def execute(self) -> Task:
        return self.probe()


def node(fed: Fed, node_id: str, extra: str = "") -> Node:
    assert fed.coord is not None
    proc, folder = fed.d.node(fed.coord, node_id, extra=extra)
    fed.nodes[node_id] = Node(node_id, folder, proc)
    return fed.nodes[node_id]


def run(fed: Fed, swarm: Swarm, timeout: float = 60.0) -> tuple[str, dict[str, Any]]:
    swarm_id = submit(fed.user, swarm)
    return swarm_id, fed.wait_done(swarm_id, timeout)


def attempts(fed: Fed, swarm_id: str, tag: str) -> list[list[Any]]:
    """The values ``tag`` of each iteration's probe attempts, in the order stored."""
    status = fed.status(swarm_id)
    return [
        [r["value"] for r in results(fed.user, swarm_id, tag, alias="probe", iteration=it)]
        for it in range(status["iteration"] + 1)
    ]


def by_iteration(fed: Fed, swarm_id: str, tag: str) -> list[Any]:
    """The value ``tag`` of each iteration's last probe attempt, in order."""
    return [values[-1] for values in attempts(fed, swarm_id, tag)]


def start(fed: Fed, extra: str = "") -> Coordinator:
    coord = fed.start(heartbeat_timeout=8.0)
    node(fed, "n0", extra)
    fed.wait_connected("n0")
    return coord


# ----------------------------------------------------------------- reuse, isolation
def test_a_warm_process_runs_its_swarms_next_instances_and_no_other_swarms(fed: Fed) -> None:
    start(fed)
    a, status = run(fed, Probed("n0", iterations=3))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    procs = by_iteration(fed, a, "process")
    assert len(set(procs)) == 1, procs  # one process ran all three instances
    left = by_iteration(fed, a, "left")
    # Module state persists within the swarm, as documented (docs/guarantees.md).
    assert left[2]["globals"] == [a, a] and left[2]["env"] == a

    # The same code (the same bundle) in another swarm, while A's process is idle.
    b, status = run(fed, Probed("n0", iterations=2))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    procs_b = by_iteration(fed, b, "process")
    assert not set(procs_b) & set(procs), "swarm B ran in swarm A's process"
    first = by_iteration(fed, b, "left")[0]
    assert first == {"globals": [], "files": [], "env": None}, first


def test_a_module_that_asks_for_fresh_processes_gets_one_per_instance(fed: Fed) -> None:
    start(fed)
    a, status = run(fed, Probed("n0", iterations=3, fresh=True))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    procs = by_iteration(fed, a, "process")
    assert len(set(procs)) == 3, procs
    assert by_iteration(fed, a, "left")[2] == {"globals": [], "files": [], "env": None}


def test_a_node_with_warm_processes_off_starts_one_per_instance(fed: Fed) -> None:
    start(fed, extra="[warm]\nenabled = false")
    a, status = run(fed, Probed("n0", iterations=3))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert len(set(by_iteration(fed, a, "process"))) == 3


# ------------------------------------------------------------------------ faults
def test_a_warm_process_killed_mid_instance_is_retried_in_a_fresh_one(fed: Fed) -> None:
    start(fed)
    a, status = run(fed, Probed("n0", iterations=3, fault="kill"))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (crash,) = status["failures"]
    assert (crash["iteration"], crash["attempt"], crash["kind"]) == (1, 0, "crash"), crash
    assert "the task process died" in crash["error"], crash
    (p0,), (killed, retry), (p2,) = attempts(fed, a, "process")
    assert killed == p0  # the killed attempt ran in the warm process of iteration 0
    assert retry != p0  # its retry in a fresh process
    assert p2 == retry  # which is warm again for the next iteration


def test_a_hung_instance_in_a_warm_process_times_out_and_its_retry_gets_a_fresh_one(
    fed: Fed,
) -> None:
    start(fed)
    a, status = run(fed, Probed("n0", iterations=3, fault="hang", timeout=3.0), timeout=90)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (hung,) = status["failures"]
    assert (hung["iteration"], hung["attempt"], hung["kind"]) == (1, 0, "timeout"), hung
    (p0,), (hung_in, retry), (p2,) = attempts(fed, a, "process")
    assert hung_in == p0 and retry != p0 and p2 == retry
    # The hung process is gone and its folders with it: one is left, the warm one's.
    work = fed.nodes["n0"].folder / "state" / "work"
    poll_for(
        lambda: len([p for p in work.iterdir() if not p.name.endswith(".view")]) == 1,
        15,
        "the hung process's folder to go",
    )


def test_a_warm_process_dies_with_its_agent_and_the_restarted_agent_starts_fresh(
    fed: Fed,
) -> None:
    start(fed)
    n0 = fed.nodes["n0"]
    a, status = run(fed, Probed("n0", iterations=2))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert task_processes(n0)  # idle, warm
    fed.kill_node("n0")  # SIGKILL: no shutdown, no goodbye to its task processes
    poll_for(lambda: not task_processes(n0), 15, "the idle warm process to end with its agent")
    restarted = time.time()
    fed.restart_node("n0")
    fed.wait_connected("n0", since=restarted)
    b, status = run(fed, Probed("n0", iterations=2))
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    assert not set(by_iteration(fed, b, "process")) & set(by_iteration(fed, a, "process"))


def test_an_agent_killed_mid_instance_of_a_warm_process_is_retried_after_restart(
    fed: Fed,
) -> None:
    start(fed)
    n0 = fed.nodes["n0"]
    a = submit(fed.user, Probed("n0", iterations=3, pause=2.0))

    def started(it: int) -> bool:  # "process" is the first thing an instance adds
        return bool(results(fed.user, a, "process", alias="probe", iteration=it))

    poll_for(lambda: started(1), 30, "iteration 1 to start (in the warm process)")
    fed.kill_node("n0")  # mid-instance
    poll_for(lambda: not task_processes(n0), 15, "its task processes to end with the agent")
    restarted = time.time()
    fed.restart_node("n0")
    fed.wait_connected("n0", since=restarted)
    status = fed.wait_done(a, 60)
    assert status["status"] == "succeeded", json.dumps(status, indent=1)
    (lost,) = status["failures"]
    assert (lost["iteration"], lost["attempt"], lost["kind"]) == (1, 0, "lost"), lost
