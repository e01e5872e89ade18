"""The Restrictions value, its presets, and how the bwrap and OCI command-line builders
turn each of its fields into flags (pure: no sandbox is started, except to build the
bwrap executor's whole command where bubblewrap works)."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
from task_harness import make_spec

from shoal._exec.base import InstanceSpec, runner_argv
from shoal._exec.bwrap import BwrapExecutor, bwrap_argv
from shoal._exec.cgroups import Cgroup, CgroupLimits
from shoal._exec.inline import InlineExecutor
from shoal._exec.oci import PIDS_LIMIT, ContainerPlan, OciExecutor, container_argv
from shoal._exec.pool import ProcessPoolExecutor
from shoal._exec.pool_bwrap import BwrapSandbox
from shoal._exec.probe import probe_bwrap
from shoal._exec.process import SubprocessExecutor
from shoal._exec.restrictions import ENFORCEABLE, SANDBOX, SIM_POOL, TRUSTED, Restrictions

FIELDS = {f.name for f in dataclasses.fields(Restrictions)}


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def values(argv: list[str], flag: str) -> list[str]:
    return [v for f, v in itertools.pairwise(argv) if f == flag]


# ------------------------------------------------------------------ the value
def test_the_presets_say_what_they_restrict() -> None:
    assert TRUSTED == Restrictions.none() == Restrictions() and TRUSTED.active() == frozenset()
    for preset in (SANDBOX, SIM_POOL):
        assert preset.active() == {"network", "host_files"}
        assert (preset.ro_binds, preset.rw_binds) == ((), ())
    assert Restrictions.SANDBOX is SANDBOX and Restrictions.SIM_POOL is SIM_POOL
    with pytest.raises(dataclasses.FrozenInstanceError):
        SANDBOX.network = True  # type: ignore[misc]
    full = Restrictions(False, False, (), (), 1, 2, 0.5, 3, 4.0)
    assert full.active() == ENFORCEABLE
    assert ENFORCEABLE <= FIELDS and {"ro_binds", "rw_binds", "devices"} == FIELDS - ENFORCEABLE
    assert full.describe() == (
        "no network; binds only (0 ro, 0 rw); 1 MB; 2 processes; 0.5 CPUs; 3 CPU s; 4 s wall"
    )


def test_an_instance_fills_a_preset_with_its_binds_and_limits(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, max_processes=64, cpus=1.5, wall_s=9.0)
    sock = tmp_path / "s.sock"
    r = spec.restrictions(SANDBOX, sockets=[sock])
    assert (r.network, r.host_files) == (False, False)
    assert r.ro_binds == (spec.bundle_dir, spec.blob_cache, spec.datasets["numbers"])
    assert r.rw_binds == (sock,)
    assert (r.memory_mb, r.max_processes, r.cpus, r.cpu_s, r.wall_s) == (256, 64, 1.5, 30, 9.0)
    preset = dataclasses.replace(SANDBOX, max_processes=128, wall_s=60.0)
    bare = InstanceSpec(**{**spec.__dict__, "max_processes": None, "wall_s": None})
    kept = bare.restrictions(preset)
    assert (kept.max_processes, kept.wall_s) == (128, 60.0)  # unset: the preset's


def test_each_executor_declares_what_it_enforces() -> None:
    assert SubprocessExecutor.enforces == {"memory_mb", "cpu_s", "wall_s"}
    assert BwrapExecutor.enforces == ENFORCEABLE  # at best; fewer without cgroups
    assert OciExecutor.enforces == ENFORCEABLE
    assert (SubprocessExecutor.preset, BwrapExecutor.preset) == (TRUSTED, SANDBOX)
    assert OciExecutor.preset == SANDBOX
    assert InlineExecutor.enforces == frozenset()
    assert BwrapSandbox.enforces == SIM_POOL.active() == {"network", "host_files"}
    assert "enforces" in ProcessPoolExecutor.__doc__  # type: ignore[operator]


# --------------------------------------------------------------- bwrap, field by field
def test_bwrap_network() -> None:
    denied = bwrap_argv(["/bin/true"], SANDBOX, workdir=Path("/w"))
    open_net = dataclasses.replace(SANDBOX, network=True)
    allowed = bwrap_argv(["/bin/true"], open_net, workdir=Path("/w"))
    assert "--unshare-net" in denied and "--unshare-net" not in allowed
    assert [a for a in denied if a != "--unshare-net"] == allowed


def test_bwrap_host_files_and_binds() -> None:
    limits = SANDBOX.with_binds(ro=[Path("/data/a.npy")], rw=[Path("/run/s.sock")])
    argv = bwrap_argv(["/bin/true"], limits, workdir=Path("/w"))
    assert ("/data/a.npy", "/data/a.npy") in pairs(argv, "--ro-bind")
    assert ("/run/s.sock", "/run/s.sock") in pairs(argv, "--bind")
    assert ("/w", "/w") in pairs(argv, "--bind")
    assert "/" not in {dst for _, dst in pairs(argv, "--bind") + pairs(argv, "--ro-bind")}
    with pytest.raises(ValueError, match="host_files=False"):
        bwrap_argv(["/bin/true"], TRUSTED, workdir=Path("/w"))  # bwrap always confines


def test_the_limits_are_not_bwrap_flags_but_the_runners_and_the_cgroups() -> None:
    plain = bwrap_argv(["/bin/true"], SANDBOX, workdir=Path("/w"))
    limited = dataclasses.replace(
        SANDBOX, memory_mb=256, max_processes=64, cpus=1.5, cpu_s=30, wall_s=9.0
    )
    assert bwrap_argv(["/bin/true"], limited, workdir=Path("/w")) == plain
    assert runner_argv("/py", Path("/s"), limited)[-4:] == [
        "--memory-mb", "256", "--cpu-seconds", "30"
    ]  # fmt: skip
    assert runner_argv("/py", Path("/s"), SANDBOX) == ["/py", "-m", "shoal._node.task_runner", "/s"]
    assert CgroupLimits.of(limited) == CgroupLimits(256, 64, 1.5)


def test_the_bwrap_executors_whole_command(tmp_path: Path) -> None:
    """memory_mb goes to the cgroup when it has a memory controller, else to the runner's
    rlimit; cpu_s always to the runner; the cgroup is joined before bwrap starts."""
    if (why := probe_bwrap()) is not None:
        pytest.skip(f"bubblewrap does not work here: {why}")
    executor = BwrapExecutor()
    spec = make_spec(tmp_path, interpreter=Path(sys.executable), pythonpath=None)
    sock = tmp_path / "s.sock"
    limits = spec.restrictions(SANDBOX, sockets=[sock])
    group = Cgroup(1, {"memory": tmp_path / "mem", "pids": tmp_path / "pids"})
    joined = executor.command(spec, sock, limits, group)
    procs = [str(tmp_path / d / "cgroup.procs") for d in ("mem", "pids")]
    assert joined[:2] == ["/bin/sh", "-c"] and joined[3:7] == ["sh", *procs, "--"]
    assert joined[7] == executor.binary
    runner = joined[joined.index("--", joined.index("--clearenv")) + 1 :]
    assert runner[-2:] == ["--cpu-seconds", "30"] and "--memory-mb" not in runner
    alone = executor.command(spec, sock, limits, None)
    assert alone[0] == executor.binary
    assert alone[-4:] == ["--memory-mb", "256", "--cpu-seconds", "30"]
    assert "--unshare-net" in alone
    assert (str(sock), str(sock)) in pairs(alone, "--bind")
    assert (str(spec.bundle_dir), str(spec.bundle_dir)) in pairs(alone, "--ro-bind")


# ------------------------------------------------------------------ OCI, field by field
def plan(limits: Restrictions) -> list[str]:
    argv = ("python3", "-m", "shoal._node.task_runner", "/s")
    return container_argv(ContainerPlan("podman", "c", "img", argv, {}, Path("/w"), limits))


def test_oci_network() -> None:
    assert values(plan(SANDBOX), "--network") == ["none"]
    assert "--network" not in plan(dataclasses.replace(SANDBOX, network=True))


def test_oci_host_files_and_binds() -> None:
    argv = plan(SANDBOX.with_binds(ro=[Path("/data/a.npy")], rw=[Path("/run/s.sock")]))
    assert "--read-only" in argv and values(argv, "--tmpfs")[0].startswith("/tmp:")
    assert values(argv, "--volume") == ["/w:/w:rw", "/data/a.npy:/data/a.npy:ro",
                                        "/run/s.sock:/run/s.sock:rw"]  # fmt: skip
    with pytest.raises(ValueError, match="host_files=False"):
        plan(TRUSTED)  # a container never shows the host's files


def test_oci_limits() -> None:
    assert values(plan(SANDBOX), "--pids-limit") == [str(PIDS_LIMIT)]
    assert "--memory" not in plan(SANDBOX) and "--cpus" not in plan(SANDBOX)
    argv = plan(dataclasses.replace(SANDBOX, memory_mb=256, max_processes=64, cpus=1.5))
    assert values(argv, "--memory") == ["256m"] and values(argv, "--memory-swap") == ["256m"]
    assert values(argv, "--pids-limit") == ["64"]
    assert values(argv, "--cpus") == ["1.5"]
    timed = plan(dataclasses.replace(SANDBOX, cpu_s=30, wall_s=9.0))
    assert timed == plan(SANDBOX)  # the runner's rlimit and the handle's watchdog
