"""GPU detection and device files, and a module's requests as an instance's limits
(#15 points 4 and 5): the CPU path everywhere, the GPU path with a fake ``nvidia-smi``
and fake device files (no GPU here; the bwrap run shows them to a real sandbox)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from task_harness import make_spec

from shoal._api.schemas import RunInstruction
from shoal._exec.bwrap import bwrap_argv
from shoal._exec.oci import OciImage, container_argv, plan_container
from shoal._exec.requirements import Installed, unmet
from shoal._exec.restrictions import SANDBOX
from shoal._node.config import Limits
from shoal._node.facts import LinkStats, detect_gpus, gpu_devices, performance
from shoal._node.instance import requested_limits

pytestmark = pytest.mark.timeout(60)


def _fake_dev(tmp_path: Path) -> Path:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null", "sda"):
        (dev / name).write_text("")
    return dev


def _smi(tmp_path: Path, script: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def test_gpus_are_detected_with_nvidia_smi_on_path(tmp_path: Path) -> None:
    path = _smi(tmp_path, 'echo "NVIDIA A100-SXM4-40GB, 40960"\necho "Tesla T4, [N/A]"\n')
    gpus = detect_gpus(path)
    assert [(g.name, g.memory) for g in gpus] == [
        ("NVIDIA A100-SXM4-40GB", 40960 * 2**20),
        ("Tesla T4", None),
    ]


def test_no_or_a_failing_nvidia_smi_means_no_gpu(tmp_path: Path) -> None:
    assert detect_gpus(str(tmp_path / "empty")) == []
    path = _smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert detect_gpus(path) == []


def test_gpu_device_files_are_the_nvidia_ones(tmp_path: Path) -> None:
    dev = _fake_dev(tmp_path)
    assert [p.name for p in gpu_devices(dev)] == ["nvidia-uvm", "nvidia0", "nvidia1", "nvidiactl"]
    assert gpu_devices(tmp_path / "missing") == []


def test_a_gpu_task_gets_device_binds_and_a_cpu_task_none(tmp_path: Path) -> None:
    devices = tuple(gpu_devices(_fake_dev(tmp_path)))
    cpu = make_spec(tmp_path / "cpu")
    gpu = make_spec(tmp_path / "gpu", devices=devices)
    cpu_argv = bwrap_argv(["/bin/true"], cpu.restrictions(SANDBOX), workdir=cpu.workdir)
    assert "--dev-bind" not in cpu_argv
    gpu_argv = bwrap_argv(["/bin/true"], gpu.restrictions(SANDBOX), workdir=gpu.workdir)
    binds = [
        (gpu_argv[i + 1], gpu_argv[i + 2]) for i, a in enumerate(gpu_argv) if a == "--dev-bind"
    ]
    assert binds == [(str(d), f"/dev/{d.name}") for d in devices]
    assert gpu_argv.index("--dev-bind") > gpu_argv.index("--dev")  # after the fresh /dev
    # The OCI executor passes the same files as --device.
    plan = plan_container("podman", gpu, tmp_path / "s.sock", OciImage("img", None))
    argv = container_argv(plan)
    shown = [v for f, v in itertools.pairwise(argv) if f == "--device"]
    assert shown == [f"{d}:/dev/{d.name}" for d in devices]
    plan = plan_container("podman", cpu, tmp_path / "s.sock", OciImage("img", None))
    assert "--device" not in container_argv(plan)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_a_sandboxed_gpu_task_sees_the_device_files(tmp_path: Path) -> None:
    devices = tuple(gpu_devices(_fake_dev(tmp_path)))
    gpu = make_spec(tmp_path / "gpu", devices=devices)
    argv = bwrap_argv(["/bin/ls", "/dev"], gpu.restrictions(SANDBOX), workdir=gpu.workdir)
    listed = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    names = set(listed.stdout.split())
    assert {"nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"} <= names and "sda" not in names
    cpu = make_spec(tmp_path / "cpu")
    argv = bwrap_argv(["/bin/ls", "/dev"], cpu.restrictions(SANDBOX), workdir=cpu.workdir)
    names = set(subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.split())
    assert "null" in names and not any(n.startswith("nvidia") for n in names)


def _item(**kw: object) -> RunInstruction:
    base: dict[str, object] = dict(
        swarm_id="s",
        instance_id="s/0/t/0/0",
        alias="t",
        iteration=0,
        attempt=0,
        module="sha256:" + "0" * 64,
        datasets=[],
        image="python",
        timeout_s=None,
    )
    return RunInstruction.model_validate({**base, **kw})


def test_a_modules_requests_lower_the_nodes_limits() -> None:
    node = Limits(memory_mb=8192, cpus=4.0, cpu_seconds=60, max_processes=64)
    assert requested_limits(_item(), node) == (8192, 60, 64, 4.0)
    asked = _item(memory=4 * 2**30, cpu=2.0)
    assert requested_limits(asked, node) == (4096, 60, 64, 2.0)
    # A request above the node's limit keeps the limit (placement checked it fits).
    assert requested_limits(_item(memory=16 * 2**30, cpu=8.0), node) == (8192, 60, 64, 4.0)
    # A node without limits gets the request as the limit.
    assert requested_limits(asked, Limits(max_processes=None)) == (4096, None, None, 2.0)


def test_requirements_are_checked_against_what_an_image_has() -> None:
    have = Installed({"numpy": "2.1.0", "scikit-learn": "1.5.0"}, {"python_version": "3.11"})
    assert unmet(["numpy>=1.24", "Scikit_Learn", "numpy; python_version < '3.0'"], have) == []
    torch, numpy, bad = unmet(["torch", "numpy<2", "not a requirement!"], have)
    assert (torch, numpy) == ("torch (not installed)", "numpy<2 (installed: 2.1.0)")
    assert bad.startswith("'not a requirement!' is not a requirement (")


def test_the_agents_own_interpreter_is_probed_once() -> None:
    from shoal._exec.requirements import RequirementChecker

    checker = RequirementChecker()
    interp = Path(sys.executable)
    assert checker.missing(["numpy", "packaging>=20"], interp) == []
    assert checker.missing(["shoal-no-such-dist"], interp) == ["shoal-no-such-dist (not installed)"]
    assert len(checker._cache) == 1


def test_load_and_link_facts() -> None:
    perf = performance()
    assert 0.0 <= perf["cpu_usage"] <= 1.0 and 0.0 <= perf["memory_usage"] <= 1.0
    assert perf["cpu_count"] >= 1 and perf["memory_total"] >= perf["memory_available"] > 0
    link = LinkStats(window=4)
    assert link.quality() == {"rtt_s": 0.0, "loss": 0.0, "samples": 0.0}
    for rtt in (0.01, None, 0.03, 0.02, None):
        link.record(rtt)
    # The window keeps the last 4: None, 0.03, 0.02, None.
    assert link.quality() == {"rtt_s": 0.025, "loss": 0.5, "samples": 4.0}


def test_installing_requirements_needs_a_package_index(tmp_path: Path) -> None:
    from shoal._errors import ShoalError
    from shoal._node.config import parse_config

    base = {"node_id": "n", "coordinator": "http://127.0.0.1:1", "state_dir": "state"}
    with pytest.raises(ShoalError, match="install_requirements: true needs package_index"):
        parse_config({**base, "install_requirements": True}, tmp_path)
    cfg = parse_config({**base, "install_requirements": True, "package_index": "wheels"}, tmp_path)
    assert cfg.package_index == str(tmp_path / "wheels")
    url = "https://pypi.example/simple"
    assert parse_config({**base, "package_index": url}, tmp_path).package_index == url
    assert parse_config(base, tmp_path).gpu is None  # detected unless set


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no GPU here (no nvidia-smi)")
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_a_real_gpu_is_detected_and_shown_to_a_sandboxed_gpu_task(tmp_path: Path) -> None:
    gpus = detect_gpus()
    assert gpus and all(g.name and g.memory for g in gpus), gpus
    devices = tuple(gpu_devices())
    assert {"nvidia0", "nvidiactl"} <= {d.name for d in devices}
    spec = make_spec(tmp_path, devices=devices, memory_mb=None)
    smi = shutil.which("nvidia-smi")
    argv = bwrap_argv([str(smi), "-L"], spec.restrictions(SANDBOX), workdir=spec.workdir)
    listed = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("GPU ") == len(gpus)
