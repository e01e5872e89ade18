"""The podman and docker executors.

Three layers:

- the command line (pure): isolation flags, mounts, limits, and no secret in argv or
  the container's environment;
- the container's lifecycle against a fake engine CLI (a script that records its
  calls): the token on stdin, kill removes the container, an OOM kill is named, image
  checks;
- real runs, for each engine that actually runs containers here: a task in a container
  reads its dataset but not a host file outside it, cannot reach a TCP server on the
  host's 127.0.0.1, is not root and has none of the agent's environment; an OOM kill is
  reported as such; kill() removes the container; a whole node (coordinator + agent
  with ``executor = "podman"``) runs a swarm in containers, and a module whose image the
  node lacks fails placement with "lacks image". Where an engine cannot run containers
  the real runs are skipped with the reason printed (``-ra``). The same isolation probe
  run by the plain ``process`` executor succeeds, which shows the probe can fail.
- the agent with an unusable image starts, logs why, and does not offer it.

No registry is reachable in CI, so the real runs use an image built here with
``<engine> import`` from this machine's Python (stdlib, numpy, msgpack; no shoal: the
executor binds the agent's shoal package into it, the fallback path).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import poll_for
from task_harness import (
    SECRET,
    TOKEN,
    MiniAgent,
    make_spec,
    oci_engine,
    outside_world,
    probe_spec,
    run_probe,
    write_bundle,
)

import shoal
from shoal._errors import ShoalError
from shoal._exec.oci import (
    HOST_SHOAL_MOUNT,
    ContainerHandle,
    OciExecutor,
    OciImage,
    container_argv,
    plan_container,
)
from shoal._exec.process import SubprocessExecutor

pytestmark = pytest.mark.timeout(120)


def volumes(argv: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "--volume":
            src, dst, mode = value.split(":")
            out[dst] = (src, mode)
    return out


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [v for f, v in itertools.pairwise(argv) if f == flag]


# ---------------------------------------------------------------- command line
def test_the_command_line_isolates_and_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_JOIN_TOKEN", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    spec = make_spec(tmp_path, max_processes=64, cpus=1.5)
    sock = tmp_path / "run" / "x.sock"
    plan = plan_container("podman", spec, sock, OciImage("localhost/task:1", None))
    argv = container_argv(plan)

    assert argv[:2] == ["podman", "run"] and "--interactive" in argv
    assert flag_values(argv, "--network") == ["none"]
    assert "--read-only" in argv
    assert flag_values(argv, "--cap-drop") == ["ALL"]
    assert flag_values(argv, "--security-opt") == ["no-new-privileges"]
    assert flag_values(argv, "--pull") == ["never"]
    assert flag_values(argv, "--tmpfs")[0].startswith("/tmp:")
    assert flag_values(argv, "--memory") == ["256m"]
    assert flag_values(argv, "--memory-swap") == ["256m"]  # no swap beyond the limit
    assert flag_values(argv, "--pids-limit") == ["64"]
    assert flag_values(argv, "--cpus") == ["1.5"]
    user = flag_values(argv, "--user")
    assert user and not user[0].startswith("0:") and user[0] != "root"

    vols = volumes(argv)
    work = str(spec.workdir)
    assert vols[work] == (work, "rw")
    for ro in (spec.bundle_dir, spec.blob_cache, spec.datasets["numbers"]):
        assert vols[str(ro.resolve())] == (str(ro.resolve()), "ro")
    assert vols[str(sock)] == (str(sock), "rw")  # the socket only, not its folder
    assert str(sock.parent) not in vols
    assert len(vols) == 5  # nothing else of the host
    assert flag_values(argv, "--workdir") == [work]

    # The runner, after the image: python3 -m shoal._node.task_runner SOCKET.
    assert flag_values(argv, "--entrypoint") == ["python3"]
    i = argv.index("localhost/task:1")
    assert argv[i + 1 :] == ["-m", "shoal._node.task_runner", str(sock), "--cpu-seconds", "30"]

    env = dict(e.split("=", 1) for e in flag_values(argv, "--env"))
    assert set(env) <= {"HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    assert env["HOME"] == work and "PATH" not in env  # the image's PATH finds python3
    assert "PYTHONPATH" not in env  # the agent's paths mean nothing in the image
    joined = " ".join(argv)
    assert SECRET not in joined and TOKEN not in joined and "--env-host" not in joined
    assert "--rm" not in argv  # the handle reads OOMKilled first, then removes it


def test_an_image_without_shoal_gets_the_agents_package_read_only(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, memory_mb=None, cpu_seconds=None)
    plan = plan_container("docker", spec, tmp_path / "s.sock", OciImage("img", HOST_SHOAL_MOUNT))
    argv = container_argv(plan)
    src, mode = volumes(argv)[f"{HOST_SHOAL_MOUNT}/shoal"]
    assert mode == "ro" and Path(src) == Path(shoal.__file__).resolve().parent
    assert (Path(src) / "__init__.py").is_file()  # the package, not its site-packages
    env = dict(e.split("=", 1) for e in flag_values(argv, "--env"))
    assert env["PYTHONPATH"] == HOST_SHOAL_MOUNT
    assert "--memory" not in argv and "--cpus" not in argv
    assert argv[-3:] == ["-m", "shoal._node.task_runner", str(tmp_path / "s.sock")]


def test_a_path_the_engine_cannot_express_is_refused(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, datasets={"d": tmp_path / "a:b"})
    plan = plan_container("podman", spec, tmp_path / "s.sock", OciImage("img", None))
    with pytest.raises(ShoalError, match="':' or ','"):
        container_argv(plan)


# ------------------------------------------------------------- fake engine CLI
FAKE_ENGINE = r"""#!/bin/sh
# A stand-in for the podman CLI: records each call, behaves as FAKE_* say.
printf '%s\n' "$*" >> "$FAKE_LOG"
case "$1" in
  info) exit 0 ;;
  image) case "$3" in *missing*) echo "Error: image not known" >&2; exit 125 ;; esac; exit 0 ;;
  inspect) echo "${FAKE_OOM:-false}"; exit 0 ;;
  kill|rm|ps) exit 0 ;;
  run)
    case "$*" in
      *" --rm "*)  # an image check
        case "$*" in
          *has-shoal*) exit 0 ;;
          *PYTHONPATH=/opt/shoal-host*needs-host*) exit 0 ;;
          *) echo "ModuleNotFoundError: No module named 'numpy'" >&2; exit 1 ;;
        esac ;;
    esac
    cat > "$FAKE_STDIN"
    case "$FAKE_RUN" in
      sleep) exec sleep 60 ;;
      killed) exit 137 ;;
      *) exit 0 ;;
    esac ;;
esac
exit 0
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OciExecutor, Path]]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    engine = bindir / "podman"
    engine.write_text(FAKE_ENGINE)
    engine.chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_STDIN", str(tmp_path / "stdin"))
    executor = OciExecutor(str(engine))
    log.write_text("")
    yield executor, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_image_checks_name_why_an_image_is_not_usable(fake: tuple[OciExecutor, Path]) -> None:
    executor, _ = fake
    assert executor.name == "podman"
    assert executor.check_image("python", "localhost/has-shoal:1") == (Path("python3"), None)
    assert executor.check_image("host", "localhost/needs-host:1") == (
        Path("python3"),
        HOST_SHOAL_MOUNT,
    )
    missing = executor.check_image("gone", "localhost/missing:1")
    assert isinstance(missing, str) and "no local image" in missing and "pull" in missing
    broken = executor.check_image("bare", "localhost/bare:1")
    assert isinstance(broken, str) and "numpy" in broken
    unset = executor.check_image("other", None)
    assert isinstance(unset, str) and "[images] other" in unset


def test_an_unchecked_image_is_refused_at_start(
    fake: tuple[OciExecutor, Path], tmp_path: Path
) -> None:
    executor, _ = fake
    with pytest.raises(ShoalError, match="not usable"):
        executor.start(make_spec(tmp_path, image="nope"), tmp_path / "s.sock", TOKEN)


def started(
    fake: tuple[OciExecutor, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: str
) -> ContainerHandle:
    executor, _ = fake
    monkeypatch.setenv("FAKE_RUN", run)
    assert executor.check_image("python", "localhost/has-shoal:1") == (Path("python3"), None)
    sock = tmp_path / "s.sock"
    sock.touch()
    handle = executor.start(make_spec(tmp_path), sock, TOKEN)
    assert isinstance(handle, ContainerHandle)
    return handle


def test_kill_removes_the_container_and_its_client(
    fake: tuple[OciExecutor, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = started(fake, tmp_path, monkeypatch, "sleep")
    token_file = tmp_path / "stdin"
    poll_for(
        lambda: token_file.exists() and token_file.read_text().endswith("\n"),
        30, "the fake engine to read its stdin", interval=0.01,
    )  # fmt: skip
    assert token_file.read_text() == TOKEN + "\n"  # on stdin, never in argv
    assert handle.poll() is None
    handle.kill()
    assert handle.poll() is not None  # the client is gone too
    log = calls(fake[1])
    assert f"kill {handle.name}" in log and f"rm --force {handle.name}" in log
    assert handle.failure_reason() is None  # we killed it: no OOM guess
    assert not any(TOKEN in line for line in log)


@pytest.mark.parametrize("recorded", ["true", "false"])
def test_a_memory_kill_is_named(
    fake: tuple[OciExecutor, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recorded: str,
) -> None:
    monkeypatch.setenv("FAKE_OOM", recorded)
    handle = started(fake, tmp_path, monkeypatch, "killed")
    assert handle.wait(30) == 137
    reason = handle.failure_reason()
    assert reason is not None and "out of memory" in reason and "256 MB" in reason
    if recorded == "true":
        assert "OOMKilled" in reason
    log = calls(fake[1])
    assert any(line.startswith("inspect --format {{.State.OOMKilled}}") for line in log)
    assert f"rm --force {handle.name}" in log  # removed once its state was read


def test_a_clean_exit_is_not_explained_and_the_container_is_removed(
    fake: tuple[OciExecutor, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = started(fake, tmp_path, monkeypatch, "ok")
    assert handle.wait(30) == 0
    assert handle.failure_reason() is None
    assert f"rm --force {handle.name}" in calls(fake[1])


def test_a_missing_engine_is_a_config_error_naming_the_fix() -> None:
    with pytest.raises(ShoalError, match="not installed") as e:
        OciExecutor("/nonexistent/podman")
    assert "bwrap" in str(e.value)


# ------------------------------------------------------------------ real runs
OOM_MODULE = """
def main():
    b = bytearray(1024 * 1024 * 1024)
    for i in range(0, len(b), 4096):
        b[i] = 1
"""

HANG_MODULE = """
import time

def main():
    time.sleep(120)
"""


@pytest.fixture(scope="module", params=["podman", "docker"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OciExecutor, str]]:
    """An executor of an engine that really runs containers here, with the test image
    checked as image ``python``, or a skip that says what is missing."""
    with oci_engine(request.param, tmp_path_factory) as found:
        yield found


@pytest.fixture
def host_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A host file outside every bind and a TCP server on 127.0.0.1."""
    with outside_world(tmp_path_factory) as found:
        yield found


def test_the_probe_escapes_a_plain_process(
    tmp_path: Path, host_secret: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the same probe run by the non-isolating executor reads the host
    file and reaches the server, so the container tests below can fail."""
    monkeypatch.setenv("SHOAL_TEST_AGENT_SECRET", SECRET)
    spec = probe_spec(tmp_path, *host_secret, memory_mb=None)
    checks = run_probe(SubprocessExecutor(), spec)
    assert checks["secret"] == "the host's secret"
    assert checks["net"] == "connected"
    assert checks["data"] == "dataset bytes"


def test_a_container_sees_its_data_and_nothing_else(
    engine: tuple[OciExecutor, str],
    tmp_path: Path,
    host_secret: tuple[Path, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executor, _ = engine
    monkeypatch.setenv("SHOAL_TEST_AGENT_SECRET", SECRET)  # the engine CLI has it
    checks = run_probe(executor, probe_spec(tmp_path, *host_secret))
    assert checks["data"] == "dataset bytes"
    assert checks["data_writable"] is False
    assert checks["secret"] == "FileNotFoundError"  # not bound: not there at all
    assert checks["net"] != "connected"  # --network none: the host's 127.0.0.1 is not ours
    assert checks["uid"] != 0
    assert checks["root_writable"] is False
    assert "SHOAL_TEST_AGENT_SECRET" not in checks["env"]
    assert set(checks["env"]) >= {"HOME", "TMPDIR", "PYTHONPATH"}


def test_a_container_over_its_memory_limit_is_reported_as_oom(
    engine: tuple[OciExecutor, str], tmp_path: Path, host_secret: tuple[Path, int]
) -> None:
    executor, _ = engine
    spec = probe_spec(tmp_path, *host_secret, memory_mb=160, cpu_seconds=None)
    write_bundle(spec.bundle_dir, OOM_MODULE, entry="probe_task")
    agent = MiniAgent(executor, spec)
    try:
        done, rc = agent.run()
        assert agent.handle is not None
        reason = agent.handle.failure_reason()  # type: ignore[attr-defined]
    finally:
        agent.close()
    assert done is None and rc == 137
    assert reason is not None and "out of memory" in reason and "160 MB" in reason


def test_kill_stops_and_removes_a_running_container(
    engine: tuple[OciExecutor, str], tmp_path: Path, host_secret: tuple[Path, int]
) -> None:
    executor, _ = engine
    spec = probe_spec(tmp_path, *host_secret)
    write_bundle(spec.bundle_dir, HANG_MODULE, entry="probe_task")
    agent = MiniAgent(executor, spec)
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    try:
        assert agent.connected.wait(60), (spec.workdir / "runner.log").read_text()
        assert isinstance(agent.handle, ContainerHandle)
        name = agent.handle.name
        agent.handle.kill()
        assert agent.handle.poll() is not None
        left = subprocess.run(
            [executor.engine, "ps", "--all", "--quiet", "--filter", f"name={name}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert left.stdout.strip() == ""
        t.join(30)
    finally:
        agent.close()


# ------------------------------------------------------------- the whole node
def test_an_agent_with_an_unusable_image_starts_and_does_not_offer_it(
    fake: tuple[OciExecutor, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from shoal._node.agent import Agent
    from shoal._node.config import parse_config

    images = {"python": "localhost/has-shoal:1", "gone": "localhost/missing:1"}
    doc = {
        "node_id": "n1",
        "coordinator": "http://127.0.0.1:9",
        "state_dir": "state",
        "executor": "podman",
        "images": {**images, "bare": "localhost/bare:1"},
    }
    cfg = parse_config(doc, tmp_path)
    assert {k: str(v) for k, v in cfg.images.items()} == doc["images"]  # kept as written
    with caplog.at_level("INFO", logger="shoal.node"):
        agent = Agent(cfg, executor=fake[0])
    try:
        assert agent.offer()["images"] == ["python"]
        assert agent.image_path("python") == (Path("python3"), None)
        said = caplog.text
        assert "image 'gone' is not offered" in said and "no local image" in said
        assert "image 'bare' is not offered" in said and "numpy" in said
    finally:
        agent.client.close()


SWARM_TASK = """
import os
from shoal.runtime import Task


class T(Task):
    def run(self):
        self.world.results.add("rows", int(self.local.get_dataset("numbers").shape[0]))
        self.world.results.add("uid", os.getuid())
        self.world.results.add("env", sorted(os.environ))


def main():
    T().run()
"""


@pytest.mark.slow
def test_a_node_runs_tasks_in_containers_and_a_missing_image_is_a_placement_error(
    engine: tuple[OciExecutor, str], tmp_path: Path
) -> None:
    from deploy_harness import deployment, results, submit, wait_nodes, wait_status

    from shoal import Module, Swarm, Task

    executor, image = engine
    numbers = tmp_path / "numbers.npy"
    np.save(numbers, np.arange(5.0))
    numbers.chmod(0o644)

    def one(image_name: str) -> Swarm:
        class One(Swarm):
            max_iterations = 1
            placement_timeout = 0.0  # no node will ever have a missing image

            def __init__(self) -> None:
                module = Module(SWARM_TASK, name="t", datasets=["numbers"], image=image_name)
                self.t = Task(module, alias="t")

            def execute(self) -> Task:
                return self.t()

        return One()

    engine_line = f'executor = "{executor.name}"\n[images]\npython = "{image}"\n'
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        _, folder = d.node(coord, "boxed", {"numbers": numbers}, extra=engine_line)
        with coord.user() as user:
            wait_nodes(user, ["boxed"], timeout=90)
            swarm_id = submit(user, one("python"))
            status = wait_status(user, swarm_id, timeout=90)
            log = (folder / "agent.log").read_text()
            assert status["status"] == "succeeded", (status, log)
            value = {
                tag: results(user, swarm_id, tag, alias="t")[0]["value"]
                for tag in ("rows", "uid", "env")
            }
            assert value["rows"] == 5 and value["uid"] != 0
            assert "PATH" in value["env"] and not any("SHOAL" in k for k in value["env"])

            missing = submit(user, one("torch"))
            failed = wait_status(user, missing, timeout=60)
            assert failed["status"] == "failed"
            assert "lacks image 'torch'" in json.dumps(failed), failed
