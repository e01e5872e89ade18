"""The bubblewrap executor: the command line it builds, what a sandboxed process sees,
the executor against a stand-in agent socket, cgroup files, and executor selection."""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import write_bundle

from shoal._errors import ShoalError
from shoal._exec import base, cgroups, probe
from shoal._exec.base import InstanceSpec, failure_reason
from shoal._exec.bwrap import BwrapExecutor, bwrap_argv, interpreter_binds
from shoal._exec.cgroups import Cgroup, CgroupLimits, Cgroups
from shoal._exec.registry import make_executor
from shoal._exec.restrictions import Restrictions
from shoal._node.config import parse_config
from shoal._runtime import protocol

PY = Path(sys.executable)
SANDBOX = Restrictions.SANDBOX


@pytest.fixture
def working_bwrap() -> None:
    """Skip (saying why) where bubblewrap is missing or cannot create its namespaces."""
    if (why := probe.probe_bwrap()) is not None:
        pytest.skip(why)


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


# ------------------------------------------------------------------ bwrap_argv (pure)
def test_bwrap_argv_binds_each_path_at_its_own_place_parents_first() -> None:
    argv = bwrap_argv(
        ["/venv/bin/python", "-m", "x"],
        SANDBOX.with_binds(
            ro=[Path("/data/a.npy"), Path("/srv/state/cache"), Path("/venv"), Path("/venv/lib")],
            rw=[Path("/srv/state/cache/run/1.sock")],
        ),
        workdir=Path("/srv/state/work/1"),
    )
    assert argv[0] == "bwrap"
    assert argv[-4:] == ["--", "/venv/bin/python", "-m", "x"]
    ro = _pairs(argv, "--ro-bind")
    assert ("/data/a.npy", "/data/a.npy") in ro and ("/venv", "/venv") in ro
    assert ("/venv/lib", "/venv/lib") not in ro  # inside /venv: bound once
    rw = _pairs(argv, "--bind")
    assert ("/srv/state/work/1", "/srv/state/work/1") in rw
    # The socket is inside a read-only folder: its bind must come after the folder's.
    assert argv.index("/srv/state/cache/run/1.sock") > argv.index("/srv/state/cache")
    assert argv[argv.index("--chdir") + 1] == "/srv/state/work/1"
    assert argv.index("--tmpfs") < argv.index("/data/a.npy")  # binds under /tmp survive


def test_bwrap_argv_isolates_namespaces_capabilities_and_environment() -> None:
    argv = bwrap_argv(["/bin/true"], SANDBOX, workdir=Path("/w"))
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--clearenv" in argv and argv.index("--clearenv") < argv.index("--setenv")
    env = dict(_pairs(argv, "--setenv"))
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/w", "TMPDIR": "/tmp",
                   "LANG": "C.UTF-8"}  # fmt: skip
    assert ("/proc" in argv) and argv[argv.index("--dev") + 1] == "/dev"
    shared = bwrap_argv(["/bin/true"], replace(SANDBOX, network=True), workdir=Path("/w"))
    assert "--unshare-net" not in shared and "--unshare-pid" in shared
    given = bwrap_argv(["/bin/true"], SANDBOX, workdir=Path("/w"), env={"A": "1"})
    assert dict(_pairs(given, "--setenv")) == {"A": "1"}


def test_bwrap_argv_shows_system_dirs_but_not_the_host() -> None:
    limits = SANDBOX.with_binds(ro=[Path("/usr/lib/x")])
    argv = bwrap_argv(["/bin/true"], limits, workdir=Path("/w"))
    visible = {dst for _, dst in _pairs(argv, "--ro-bind") + _pairs(argv, "--bind")}
    visible |= {dst for _, dst in _pairs(argv, "--symlink")}
    visible |= {dst for _, dst in _pairs(argv, "--ro-bind-try")}
    assert "/usr" in visible and "/usr/lib/x" not in visible  # already under /usr
    for secret in ("/", "/root", "/home", "/etc", "/etc/shadow", "/var", "/run", "/sys"):
        assert secret not in visible, secret
    assert all(p.startswith(("/usr", "/bin", "/sbin", "/lib", "/etc/", "/w")) for p in visible)


def test_interpreter_binds_are_this_pythons_environment_only() -> None:
    binds = interpreter_binds(PY, None)
    assert Path(sys.prefix) in binds or any(p in Path(sys.prefix).parents for p in binds)
    assert all(p.exists() and p.is_absolute() for p in binds)
    for too_wide in (Path("/"), Path.home(), Path("/root"), Path("/home"), Path("/work")):
        assert too_wide not in binds, binds
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists() and Path(sys.prefix) != repo:
        assert repo not in binds  # a checkout: its src/ and .venv/, not the whole of it
    assert interpreter_binds(PY, None) == binds  # asked once, cached


# ------------------------------------------------------------- a real sandboxed run
@pytest.mark.usefixtures("working_bwrap")
def test_a_sandboxed_process_sees_only_what_it_was_given(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("visible")
    (tmp_path / "secret.txt").write_text("hidden")
    work = tmp_path / "work"
    work.mkdir()
    script = """
import json, os, socket
def attempt(fn):
    try:
        return "ok: " + repr(fn())
    except OSError as e:
        return type(e).__name__ + ": " + e.strerror
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return line.split()[1]
print(json.dumps({
    "data": attempt(lambda: open(DATA).read()),
    "secret": attempt(lambda: open(SECRET).read()),
    "write_data": attempt(lambda: open(DATA, "a").write("x")),
    "write_work": attempt(lambda: open("scratch", "w").write("x")),
    "tmp": os.listdir("/tmp"),
    "listing": sorted(os.listdir(os.path.dirname(DATA))),
    "pid": os.getpid(),
    "caps": status("CapEff"),
    "nics": sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else [],
    "env": dict(os.environ),
    "net": attempt(lambda: socket.create_connection(("1.1.1.1", 53), timeout=2)),
}))
"""
    consts = f"DATA = {str(data)!r}\nSECRET = {str(tmp_path / 'secret.txt')!r}\n"
    binds = [*interpreter_binds(PY, None), data, work]
    argv = bwrap_argv([str(PY), "-c", consts + script], SANDBOX.with_binds(ro=binds), workdir=work)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["data"] == "ok: 'visible'"
    assert seen["secret"] == "FileNotFoundError: No such file or directory"
    assert seen["write_data"] == "OSError: Read-only file system"
    assert seen["write_work"] == "ok: 1" and (work / "scratch").read_text() == "x"
    assert seen["listing"] == ["data.txt", "work"]
    # The sandbox's /tmp is empty but for the parents of what was bound under /tmp
    # (tmp_path, and the checkout's venv when it lives there).
    tmp = Path("/tmp")
    parents = {b.relative_to(tmp).parts[0] for b in binds if tmp in b.parents}
    assert set(seen["tmp"]) <= parents
    assert seen["pid"] <= 3  # a PID namespace of its own
    assert int(seen["caps"], 16) == 0  # no capabilities, even as root
    assert "Network is unreachable" in seen["net"]
    assert set(seen["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD"}


# -------------------------------------------------- the executor, with a stand-in agent
@pytest.fixture
def instance(tmp_path: Path) -> Iterator[tuple[InstanceSpec, Path, socket.socket]]:
    bundle = write_bundle(tmp_path / "bundle", "def main():\n    print('hello from the sandbox')\n")
    (tmp_path / "blobs").mkdir()
    workdir = tmp_path / "work" / "k1"
    (workdir / "outbox").mkdir(parents=True)
    sock_path = tmp_path / "i.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    listener.settimeout(30)
    pythonpath = str(Path(base.__file__).resolve().parents[2])
    spec = InstanceSpec(
        "s/0/t/0/0", PY, pythonpath, workdir, bundle, {}, tmp_path / "blobs",
        memory_mb=512, max_processes=64,
    )  # fmt: skip
    with listener:
        yield spec, sock_path, listener


def _serve_one(listener: socket.socket, spec: InstanceSpec, token: str) -> list[dict[str, object]]:
    """Play the agent for one instance: check the token, hand the context, collect
    frames up to ``done``."""
    conn, _ = listener.accept()
    with conn:
        hello = protocol.recv(conn)
        assert hello["op"] == "hello" and hello["args"] == {"token": token}
        ctx = {
            "swarm_id": "s", "instance_id": spec.instance_id, "node_id": "n", "alias": "t",
            "iteration": 0, "attempt": 0, "module": "sha256:t", "folder": str(spec.bundle_dir),
            "outbox": str(spec.workdir / "outbox"), "global_versions": {},
        }  # fmt: skip
        protocol.send(conn, {"id": hello["id"], "ok": ctx})
        frames: list[dict[str, object]] = []
        while not frames or frames[-1].get("op") != "done":
            frames.append(protocol.recv(conn))
        return frames


@pytest.mark.usefixtures("working_bwrap")
def test_the_executor_runs_a_task_with_its_token_on_stdin(
    instance: tuple[InstanceSpec, Path, socket.socket],
) -> None:
    spec, sock_path, listener = instance
    executor = BwrapExecutor()
    token = secrets.token_urlsafe(32)
    handle = executor.start(spec, sock_path, token)
    try:
        for pid in _pids_of(str(sock_path)):  # never in argv nor in the environment
            assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert token.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        frames = _serve_one(listener, spec, token)
        assert {"op": "log", "args": {"level": "info", "message": "hello from the sandbox"}} in [
            {k: f.get(k) for k in ("op", "args")} for f in frames
        ]
        assert frames[-1]["ok"] is True
        assert handle.wait(30) == 0
    finally:
        handle.kill()
    assert failure_reason(handle) is None
    cgroup = getattr(handle, "cgroup", None)
    if cgroup is not None:  # removed once the instance exited
        assert not any(d.exists() for d in cgroup.folders)


@pytest.mark.usefixtures("working_bwrap")
def test_a_sandbox_that_cannot_start_says_why(
    instance: tuple[InstanceSpec, Path, socket.socket], tmp_path: Path
) -> None:
    spec, sock_path, _ = instance
    broken = InstanceSpec(**{**spec.__dict__, "datasets": {"gone": tmp_path / "missing.npy"}})
    handle = BwrapExecutor().start(broken, sock_path, "t")
    assert handle.wait(30) == 1
    reason = failure_reason(handle)
    assert reason is not None and reason.startswith("the sandbox failed to start: bwrap: ")
    assert "missing.npy" in reason


def _pids_of(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# --------------------------------------------------------------- cgroups (fake files)
def _fake(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_v2_limits_and_counters(tmp_path: Path) -> None:
    d = tmp_path / "leaf"
    _fake(d, {"memory.swap.max": "max", "memory.oom.group": "0", "cgroup.procs": ""})
    group = Cgroup(2, {"memory": d, "pids": d, "cpu": d})
    group.set_limits(CgroupLimits(memory_mb=256, max_processes=64, cpus=1.5))
    assert (d / "memory.max").read_text() == str(256 << 20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "memory.oom.group").read_text() == "1"
    assert (d / "pids.max").read_text() == "64"
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert group.procs_files == [d / "cgroup.procs"]
    _fake(d, {"memory.events": "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
              "pids.events": "max 0\n"})  # fmt: skip
    assert (group.counters().oom_kills, group.counters().pids_refused) == (1, 0)


def test_v1_limits_and_counters(tmp_path: Path) -> None:
    mem, pids = tmp_path / "memory" / "leaf", tmp_path / "pids" / "leaf"
    _fake(mem, {"memory.memsw.limit_in_bytes": "", "cgroup.procs": ""})
    _fake(pids, {"cgroup.procs": ""})
    group = Cgroup(1, {"memory": mem, "pids": pids})
    group.set_limits(CgroupLimits(memory_mb=100, max_processes=10))
    assert (mem / "memory.limit_in_bytes").read_text() == str(100 << 20)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(100 << 20)  # no swap
    assert (pids / "pids.max").read_text() == "10"
    assert sorted(group.procs_files) == sorted([mem / "cgroup.procs", pids / "cgroup.procs"])
    _fake(mem, {"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"})
    _fake(pids, {"pids.events": "max 3\n"})
    assert (group.counters().oom_kills, group.counters().pids_refused) == (0, 3)


def test_v2_moves_the_agents_cgroup_processes_aside_to_enable_controllers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cgroup v2 lets a cgroup hand controllers to children only when it holds no
    process itself: the agent's processes move into a leaf first (as container
    runtimes do), and a second agent, found in that leaf, uses its parent."""
    own = tmp_path / "session.scope"
    _fake(own, {"cgroup.controllers": "cpuset cpu io memory pids", "cgroup.subtree_control": "",
                "cgroup.procs": "101\n102\n"})  # fmt: skip
    real_write = cgroups._write

    def kernel(path: Path, value: str) -> None:  # what the kernel would do
        if path.name == "cgroup.subtree_control" and (own / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "Device or resource busy")
        if path.name == "cgroup.subtree_control":
            value = " ".join(sorted({*path.read_text().split(), *value.replace("+", "").split()}))
        if path.name == "cgroup.procs":
            left = (own / "cgroup.procs").read_text().split()
            (own / "cgroup.procs").write_text("\n".join(p for p in left if p != value))
            value = path.read_text() + value + "\n" if path.exists() else value + "\n"
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", kernel)
    found = cgroups._v2(own)
    assert isinstance(found, Cgroups), found
    assert found.bases == {"memory": own, "pids": own, "cpu": own}
    assert (own / cgroups.INIT_LEAF / "cgroup.procs").read_text().split() == ["101", "102"]
    assert (own / "cgroup.subtree_control").read_text().split() == ["cpu", "memory", "pids"]
    again = cgroups._v2(own / cgroups.INIT_LEAF)  # the next agent, already moved aside
    assert isinstance(again, Cgroups) and again.bases["memory"] == own


def test_v2_without_delegated_controllers_says_so(tmp_path: Path) -> None:
    own = tmp_path / "x.service"
    _fake(own, {"cgroup.controllers": "cpu io", "cgroup.subtree_control": ""})
    found = cgroups._v2(own)
    assert isinstance(found, str) and "lacks the memory or pids controller" in found


def test_real_cgroups_hold_a_process_and_are_removed() -> None:
    found = Cgroups.detect()
    if not isinstance(found, Cgroups):
        pytest.skip(f"no usable cgroups here: {found}")
    group = found.create("unit-test", CgroupLimits(memory_mb=64, max_processes=16))
    try:
        join = 'for f in "$@"; do echo $$ > "$f"; done; cat /proc/self/cgroup'
        out = subprocess.run(
            ["/bin/sh", "-c", join, "sh", *map(str, group.procs_files)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert f"shoal-{os.getpid()}-unit-test" in out
    finally:
        assert group.remove()
    assert not any(d.exists() for d in group.folders)


# ----------------------------------------------------------------- choosing an executor
def test_process_and_its_old_name_subprocess_are_the_plain_executor() -> None:
    assert make_executor("process").name == "process"
    assert make_executor("subprocess").name == "process"  # configs written before


def test_auto_falls_back_to_process_with_a_warning_saying_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH
    probe.probe_bwrap.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="shoal.node"):
            chosen = make_executor("auto")
        assert chosen.name == "process"
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            "falling back to 'process'" in m and "bubblewrap is not installed" in m for m in warned
        ), warned
        with pytest.raises(ShoalError, match="bubblewrap is not installed") as err:
            make_executor("bwrap")  # asked for by name: no silent fallback
        assert err.value.code == "node.executor"
    finally:
        probe.probe_bwrap.cache_clear()


@pytest.mark.usefixtures("working_bwrap")
def test_auto_is_bwrap_where_bwrap_works() -> None:
    assert make_executor("auto").name == "bwrap"


def test_the_config_defaults_to_auto_and_bounds_processes(tmp_path: Path) -> None:
    base = {"node_id": "n", "coordinator": "http://c:1", "state_dir": "s"}
    cfg = parse_config(base, tmp_path)
    assert cfg.executor == "auto" and cfg.limits.max_processes == 512
    cfg = parse_config({**base, "limits": {"max_processes": 64, "cpus": 0.5}}, tmp_path)
    assert (cfg.limits.max_processes, cfg.limits.cpus) == (64, 0.5)
    with pytest.raises(ShoalError, match="max_processes"):
        parse_config({**base, "limits": {"max_processes": 1}}, tmp_path)
