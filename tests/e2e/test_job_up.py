"""The job dialect on a real deployment (issue 18): ``shoal up --job`` starts the nodes
``server`` and ``site-1..site-N``, ``shoal deploy JOB_ROOT`` deploys what
``export_job`` wrote, and the seed's example (examples/fedjob_digits) ends with the
accuracy it reaches in ``simulator_run`` at the same seed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shoal

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fedjob_digits"

# generous: these start a coordinator, node agents and torch on a machine that may be
# busy; every wait below has its own bound
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
READY = ("--timeout", "240")  # shoal up's wait for the coordinator and the nodes


def _example(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE / "job.py"), *args],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _accuracy(weights: dict[str, Any]) -> float:
    import torch

    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        from digits_fl import load  # type: ignore[import-not-found]
        from net import Net  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(EXAMPLE / "src"))
    _, (x_test, y_test) = load(1, 2)
    net = Net()
    # np.array: a writable copy (the decoded arrays are read-only views)
    net.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})
    with torch.no_grad():
        return float((net(x_test).argmax(1) == y_test).float().mean())


def test_fedjob_digits_on_shoal_up_equals_simulator_run(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    printed = _example("--rounds", "2", "--workspace", str(tmp_path / "ws"))
    m = re.search(r"final test accuracy: ([0-9.]+)", printed)
    assert m is not None, printed
    simulated = float(m.group(1))
    _example("--rounds", "2", "--export", str(tmp_path / "jobs"))

    up = start_up("--nodes", "2", "--job", *READY)
    up.wait_ready(260)
    assert "with 3 node(s) (server ... site-2) is ready" in up.stdout(), up.stdout()
    deployed = up.shoal("deploy", str(tmp_path / "jobs"))  # export_job's job_root
    assert deployed.returncode == 0, deployed.stderr + up.diagnostics()
    swarm_id = deployed.stdout.strip()
    watched = up.shoal("status", swarm_id, "--watch", "--timeout", "300", timeout=320)
    assert watched.returncode == 0, watched.stdout + watched.stderr + up.diagnostics()
    with shoal.Client(up.url, up.token) as client:
        weights = client.get_global(swarm_id, "weights")
        placed = {n.node_id: n.connected for n in client.nodes()}
    assert placed == {"server": True, "site-1": True, "site-2": True}
    deployed_accuracy = _accuracy(weights)
    print(f"simulator_run: {simulated:.4f}, shoal up: {deployed_accuracy:.4f}")
    assert simulated >= 0.85, printed
    assert abs(deployed_accuracy - simulated) <= 0.01, (deployed_accuracy, simulated)


SCRIPT = """
import argparse
import numpy as np
import shoal.job.client as flare

p = argparse.ArgumentParser()
p.add_argument("--site", type=int)
args = p.parse_args()
while flare.is_running():
    m = flare.receive()
    assert flare.get_site_name() == f"site-{args.site}"
    flare.send(flare.FLModel(params={k: np.asarray(v) + args.site for k, v in m.params.items()},
                             meta={"NUM_STEPS_CURRENT_ROUND": args.site}))
"""


def test_shoal_up_deploys_an_exported_job_and_exits_0(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    from shoal.job import FedAvg, FedJob, NPModel, ScriptRunner

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("sums", min_clients=2)
    job.to_server(FedAvg(num_clients=2, num_rounds=2))
    job.to_server(NPModel({"w": np.zeros(2)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    folder = job.export_job(str(tmp_path / "jobs"))
    script.unlink()  # the export carries it

    up = start_up("--nodes", "2", "--deploy", folder, "--run-timeout", "240", *READY)
    code = up.proc.wait(540)
    assert code == 0, up.diagnostics()
    assert "with 3 node(s) (server ... site-2) is ready" in up.stdout(), up.stdout()
    assert f"deployed {folder} as swarm" in up.stdout()
    up.assert_nothing_left()


def test_shoal_up_refuses_a_folder_of_two_jobs_before_starting_anything(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "a" / "j1").mkdir(parents=True)
    (tmp_path / "a" / "j2").mkdir(parents=True)
    for j in ("j1", "j2"):
        (tmp_path / "a" / j / "job.json").write_text("{}")
    up = start_up("--nodes", "1", "--deploy", str(tmp_path / "a"))
    code = up.proc.wait(60)
    assert code != 0 and "holds 2 exported jobs" in up.stderr_path.read_text()
    assert "starting the coordinator" not in up.stderr_path.read_text()
    up.assert_nothing_left()
