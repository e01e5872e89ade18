"""Seed 002's `Task(..., network="overlay")` without `add_network` (issue 15, point 7):
a driver's name is an implicitly declared network; under the OCI executors the tasks of
one swarm on one network share a container network on a node; elsewhere it has no
effect, said once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from deploy_harness import deployment, submit, wait_nodes, wait_status
from task_harness import TOKEN, make_spec

import shoal
from shoal import Module, Swarm, Task
from shoal._exec.base import container_network
from shoal._exec.oci import OciImage, container_argv, plan_container

CODE = """
from shoal.runtime import Task as RuntimeTask


class Worker(RuntimeTask):
    def run(self):
        self.logger.info("on the overlay")
        self.world.results.add("n", 1)


def main():
    Worker().run()
"""


class OverlaySwarm(Swarm):
    """Seed 002's task block, without the add_network call the seed leaves out there."""

    max_iterations = 2

    def execute(self):
        module = Module(name="my_module", python_program=CODE, version="1.0.0")
        task = Task(
            module=module,  # Module to execute
            method="all",  # Scheduling method
            fixed=False,  # Dynamic node assignment
            maximum=10,  # Max nodes to use
            network="overlay",  # Network type
            gpu=False,  # GPU requirement
            alias="worker",  # Task identifier
        )
        return task()


def test_a_driver_name_is_an_implicitly_declared_network() -> None:
    plan = OverlaySwarm().prepare_graph()
    assert plan.networks == {"overlay": "overlay"}
    assert plan.task("worker").network == "overlay"


def test_an_unknown_network_is_still_refused_naming_the_drivers() -> None:
    class Typo(Swarm):
        def execute(self):
            return Task(Module(CODE), network="overlai")()

    with pytest.raises(shoal.SwarmValidationError, match="unknown network 'overlai'") as e:
        Typo().prepare_graph()
    assert "'overlay'" in str(e.value)  # the fix names the driver names


def test_the_simulator_says_once_that_networks_have_no_effect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="shoal.simulate"):
        run = shoal.simulate(OverlaySwarm(), nodes=3, seed=0)
    assert run.status == "succeeded", run.reason
    said = [r.getMessage() for r in caplog.records if "no effect" in r.getMessage()]
    assert len(said) == 1 and "['overlay']" in said[0] and "podman/docker" in said[0]


def test_oci_tasks_of_one_swarm_on_one_network_share_an_internal_container_network(
    tmp_path: Path,
) -> None:
    net = container_network("swarm-1", "overlay")
    assert net == container_network("swarm-1", "overlay") != container_network("swarm-2", "overlay")
    assert net != container_network("swarm-1", "backend")
    image = OciImage("localhost/task:1", None)
    on_net = plan_container("podman", make_spec(tmp_path, network=net), tmp_path / "a.sock", image)
    argv = container_argv(on_net)
    assert argv[argv.index("--network") + 1] == net and argv.count("--network") == 1
    alone = plan_container("podman", make_spec(tmp_path), tmp_path / "b.sock", image)
    argv = container_argv(alone)
    assert argv[argv.index("--network") + 1] == "none"


FAKE_ENGINE = r"""#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_LOG"
case "$1" in
  run) case "$*" in *" --rm "*) exit 0 ;; esac; cat > /dev/null; exit 0 ;;
esac
exit 0
"""


def test_the_oci_executor_creates_the_network_once_before_its_containers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal._exec.oci import OciExecutor

    engine = tmp_path / "podman"
    engine.write_text(FAKE_ENGINE)
    engine.chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    executor = OciExecutor(str(engine))
    assert executor.check_image("python", "localhost/has-shoal:1") == (Path("python3"), None)
    net = container_network("swarm-1", "overlay")
    for name in ("a", "b"):
        sock = tmp_path / f"{name}.sock"
        sock.touch()
        spec = make_spec(tmp_path / name, network=net)
        executor.start(spec, sock, TOKEN).wait(30)
    calls = log.read_text().splitlines()
    creates = [c for c in calls if c.startswith("network create")]
    assert len(creates) == 1 and "--internal" in creates[0] and creates[0].endswith(net)
    runs = [c for c in calls if c.startswith("run ") and " --rm " not in f" {c} "]
    assert len(runs) == 2 and all(f"--network {net}" in c for c in runs)
    assert calls.index(creates[0]) < calls.index(runs[0])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_real_node_without_oci_says_once_that_the_network_has_no_effect(
    tmp_path: Path,
) -> None:
    with deployment(tmp_path) as d:
        coord = d.coordinator()
        _, folder = d.node(coord, "n1", extra='executor = "process"')
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, ["n1"])
        swarm_id = submit(user, OverlaySwarm())
        status = wait_status(user, swarm_id, timeout=60)
        assert status["status"] == "succeeded", json.dumps(status, indent=1)
        # The status and the logs name the module and its version (point 2).
        assert status["tasks"]["worker"]["module"] == "my_module"
        assert status["tasks"]["worker"]["version"] == "1.0.0"
        logs = user.get(f"/v1/swarms/{swarm_id}/logs", params={"task": "worker"}).json()
        assert {(r["module"], r["version"]) for r in logs} == {("my_module", "1.0.0")}
        said = [
            line
            for line in (folder / "agent.log").read_text().splitlines()
            if "network 'overlay'" in line and "no effect" in line
        ]
        assert len(said) == 1, said  # two iterations, one warning
