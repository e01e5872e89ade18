"""The same scenarios against every node-level executor this machine has, through the
public interface only (``Executor.start`` with an :class:`InstanceSpec`, a socket and a
token; the handle's ``poll`` / ``wait`` / ``kill``; :func:`failure_reason`).

Executors: ``process`` and ``bwrap`` (skipped, saying why, where bubblewrap does not
work), ``podman`` and ``docker`` (skipped, saying why, where the engine cannot run
containers). Scenarios: a task that succeeds; a task that raises and one that crashes;
the wall-clock limit (killed, and named); the memory limit (named; executors that
enforce ``memory_mb``); a scrubbed environment and a token never in argv or in any
environment; a writable work dir; the bundle and datasets read-only, the network denied
and an undeclared dataset unreadable where the executor enforces ``host_files`` /
``network``, and reachable where it does not (so each check can fail).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
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

from shoal._exec.base import Executor, InstanceSpec, failure_reason
from shoal._exec.bwrap import BwrapExecutor
from shoal._exec.probe import probe_bwrap
from shoal._exec.process import SubprocessExecutor
from shoal._exec.restrictions import ENFORCEABLE

pytestmark = pytest.mark.timeout(120)

NODE_EXECUTORS = ["process", "bwrap", "podman", "docker"]


@pytest.fixture(scope="module", params=NODE_EXECUTORS)
def executor(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Executor]:
    """Each node-level executor that works here; a skip with the reason otherwise."""
    name: str = request.param
    if name == "process":
        yield SubprocessExecutor()
    elif name == "bwrap":
        if (why := probe_bwrap()) is not None:
            pytest.skip(f"the bwrap executor cannot run here: {why}")
        yield BwrapExecutor()
    else:
        with oci_engine(name, tmp_path_factory) as (found, _image):
            yield found


def spec_with(root: Path, code: str, **kw: Any) -> InstanceSpec:
    """An instance running ``code`` with this Python (an OCI executor runs its checked
    image ``python`` instead), no limits but those in ``kw``, readable by a container's
    non-root user."""
    limits: dict[str, Any] = {"memory_mb": None, "cpu_seconds": None, **kw}
    spec = make_spec(root, pythonpath=None, interpreter=Path(sys.executable), **limits)
    write_bundle(spec.bundle_dir, code)
    for p in (root, root / "work", root / "bundle", root / "data", root / "blobs"):
        p.chmod(0o755)
    return spec


def run(executor: Executor, spec: InstanceSpec) -> tuple[dict[str, Any] | None, int | None, str]:
    """Run one instance as an agent would: its ``done`` frame (None if it died first),
    its exit status, and its failure as the agent reports it (the handle's reason for
    the limit that stopped it, then the task's own error)."""
    agent = MiniAgent(executor, spec)
    try:
        done, rc = agent.run()
        assert agent.handle is not None
        reason = failure_reason(agent.handle)
    finally:
        agent.close()
    error = str(done.get("error", "")) if done is not None else ""
    return done, rc, "; ".join(x for x in (reason, error) if x)


def test_every_executor_names_what_it_enforces(executor: Executor) -> None:
    assert executor.enforces <= ENFORCEABLE
    assert {"cpu_s", "wall_s"} <= executor.enforces  # the task runner's rlimit, the handle
    if executor.name != "process":
        assert {"network", "host_files", "memory_mb"} <= executor.enforces
    else:
        assert not {"network", "host_files"} & executor.enforces  # no isolation


def test_a_task_that_succeeds(executor: Executor, tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "def main():\n    print('hello')\n")
    done, rc, reported = run(executor, spec)
    assert done is not None and done["ok"] is True, (rc, reported)
    assert rc == 0 and reported == ""


@pytest.mark.parametrize(
    ("body", "expect_done", "expect_rc", "said"),
    [
        ("raise ValueError('bad shard')", True, 0, "ValueError: bad shard"),
        ("import os; os._exit(3)", False, 3, ""),
    ],
    ids=["raises", "crashes"],
)
def test_a_failing_task(
    executor: Executor,
    tmp_path: Path,
    body: str,
    expect_done: bool,
    expect_rc: int,
    said: str,
) -> None:
    spec = spec_with(tmp_path, f"def main():\n    {body}\n")
    done, rc, reported = run(executor, spec)
    assert (done is not None) is expect_done
    if done is not None:
        assert done["ok"] is False and str(done["error"]).startswith(said)
    assert rc == expect_rc
    assert reported == said  # no limit is blamed


def test_the_wall_clock_limit_kills_and_is_named(executor: Executor, tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "import time\n\ndef main():\n    time.sleep(100)\n", wall_s=2.0)
    t0 = time.monotonic()
    done, rc, reported = run(executor, spec)
    assert done is None and rc != 0
    assert time.monotonic() - t0 < 60
    assert reported.startswith("wall-clock limit of 2 s exceeded"), reported


MEMORY_HOG = """
def main():
    b = bytearray(2 * 1024**3)
    for i in range(0, len(b), 4096):
        b[i] = 1
"""


def test_the_memory_limit_is_named(executor: Executor, tmp_path: Path) -> None:
    if "memory_mb" not in executor.enforces:
        pytest.skip(f"executor {executor.name!r} does not enforce memory_mb")
    spec = spec_with(tmp_path, MEMORY_HOG, memory_mb=512)
    done, rc, reported = run(executor, spec)
    assert done is None or done["ok"] is False
    assert "memory limit of 512 MB" in reported, (rc, reported)


# ---------------------------------------------------- what a task can see and reach
@pytest.fixture(scope="module")
def probed(
    executor: Executor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Any], dict[int, tuple[bytes, bytes]], InstanceSpec, Path]]:
    """The probe task's findings under ``executor`` (the agent's environment holding a
    secret), every host process of the instance's argv and environment while it ran,
    its spec, and the undeclared dataset it tried."""
    os.environ["SHOAL_TEST_AGENT_SECRET"] = SECRET
    seen: dict[int, tuple[bytes, bytes]] = {}
    try:
        with outside_world(tmp_path_factory) as (undeclared, port):
            root = tmp_path_factory.mktemp("probe")
            spec = probe_spec(root, undeclared, port)
            marker = str(spec.workdir).encode()

            def scan() -> None:
                seen.update(_processes_naming(marker))

            checks = run_probe(executor, spec, on_connected=scan)
            yield checks, seen, spec, undeclared
    finally:
        del os.environ["SHOAL_TEST_AGENT_SECRET"]


def _processes_naming(marker: bytes) -> dict[int, tuple[bytes, bytes]]:
    """pid -> (argv, environment) of every process whose argv or working dir names
    ``marker`` (the instance's work dir: the task, its sandbox or engine client)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd").encode()
            if marker in argv or cwd.startswith(marker):
                found[int(entry.name)] = (argv, (entry / "environ").read_bytes())
        except OSError:
            continue
    return found


def test_the_environment_is_scrubbed_and_the_token_is_never_in_argv_or_env(
    probed: tuple[dict[str, Any], dict[int, tuple[bytes, bytes]], InstanceSpec, Path],
) -> None:
    checks, seen, _, _ = probed
    env: dict[str, str] = checks["env"]
    assert "SHOAL_TEST_AGENT_SECRET" not in env
    assert set(env) <= {
        "PATH", "HOME", "TMPDIR", "LANG", "LC_CTYPE", "PYTHONPATH", "PWD", "HOSTNAME",
        "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "container",
    }, env  # fmt: skip
    assert not any(s in v for v in env.values() for s in (SECRET, TOKEN))
    assert not any(TOKEN in a for a in checks["argv"])
    assert seen, "no process of the instance was found while it ran"
    for pid, (argv, environ) in seen.items():
        assert TOKEN.encode() not in argv and TOKEN.encode() not in environ, pid


def test_the_work_dir_is_writable(
    probed: tuple[dict[str, Any], dict[int, tuple[bytes, bytes]], InstanceSpec, Path],
) -> None:
    checks, _, spec, _ = probed
    assert (spec.workdir / "scratch").read_text() == "work is writable"
    assert checks["env"]["HOME"] == str(spec.workdir)


def test_the_bundle_and_datasets_are_read_only_where_enforced(
    executor: Executor,
    probed: tuple[dict[str, Any], dict[int, tuple[bytes, bytes]], InstanceSpec, Path],
) -> None:
    checks, _, spec, _ = probed
    assert checks["data"] == "dataset bytes"  # its declared dataset: readable
    confined = "host_files" in executor.enforces
    assert checks["bundle_writable"] is not confined
    assert checks["data_writable"] is not confined
    assert (spec.bundle_dir / "written-by-the-task").exists() is not confined


def test_the_network_is_denied_where_enforced(
    executor: Executor,
    probed: tuple[dict[str, Any], dict[int, tuple[bytes, bytes]], InstanceSpec, Path],
) -> None:
    checks = probed[0]
    if "network" in executor.enforces:
        assert checks["net"] != "connected"  # the host's 127.0.0.1 is not the task's
    else:
        assert checks["net"] == "connected"


def test_an_undeclared_dataset_is_unreadable_where_enforced(
    executor: Executor,
    probed: tuple[dict[str, Any], dict[int, tuple[bytes, bytes]], InstanceSpec, Path],
) -> None:
    checks, _, _, undeclared = probed
    if "host_files" in executor.enforces:
        assert checks["secret"] == "FileNotFoundError"  # not bound: not there at all
    else:
        assert checks["secret"] == undeclared.read_text()
