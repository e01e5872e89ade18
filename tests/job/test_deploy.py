"""``export_job`` output deployed to a real coordinator (``shoal deploy JOB_ROOT``'s
code path): a coordinator and node agents ``server``, ``site-1``, ``site-2`` as real
processes on loopback, the job read back from its folder only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deploy_harness import deployment, global_value, wait_nodes, wait_status

import shoal
from shoal._errors import ShoalError
from shoal.job import FedAvg, FedJob, NPModel, ScriptRunner
from shoal.job._deploy import deploy_job, find_job, load

pytestmark = pytest.mark.timeout(120)

# Each site adds its number to every weight and reports that many steps: FedAvg
# weighted by NUM_STEPS_CURRENT_ROUND moves the model by (1*1 + 2*2) / 3 per round.
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


def _export(tmp_path: Path, n_clients: int = 2, rounds: int = 2) -> str:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("sums", min_clients=n_clients)
    job.to_server(FedAvg(num_clients=n_clients, num_rounds=rounds))
    job.to_server(NPModel({"w": np.zeros(3)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    folder = job.export_job(str(tmp_path / "jobs"))
    script.unlink()  # the export carries the script: nothing outside it is read
    return folder


def test_an_exported_job_deploys_to_server_and_sites_and_computes_fedavg(
    tmp_path: Path,
) -> None:
    folder = _export(tmp_path)
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        ids = ["server", "site-1", "site-2"]
        for node_id in ids:
            d.node(coord, node_id)
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, ids)
        with shoal.Client(coord.url, coord.user_token) as client:
            swarm_id = deploy_job(client, tmp_path / "jobs")  # export_job's job_root
        status = wait_status(user, swarm_id, timeout=90)
        assert status["status"] == "succeeded", json.dumps(status, indent=1) + coord.output()
        weights = global_value(user, swarm_id, "weights")
    np.testing.assert_allclose(np.asarray(weights["w"]), np.full(3, 2 * 5 / 3))
    assert find_job(folder) == Path(folder)  # the job folder itself works too


def test_deploy_refuses_what_is_no_job_before_contacting_anything(tmp_path: Path) -> None:
    assert find_job(tmp_path / "missing") is None
    with pytest.raises(ShoalError, match="is not an exported job") as e:
        load(tmp_path)
    assert e.value.code == "job.config"
    for name in ("a", "b"):
        (tmp_path / "two" / name).mkdir(parents=True)
        (tmp_path / "two" / name / "job.json").write_text("{}")
    with pytest.raises(ShoalError, match="holds 2 exported jobs") as e:
        find_job(tmp_path / "two")
    assert "shoal deploy" in (e.value.hint or "")


def test_a_deployed_job_runs_on_the_sites_its_controller_asks_for(tmp_path: Path) -> None:
    folder = _export(tmp_path, n_clients=3)
    _, sites = load(folder)
    assert sites == ["site-1", "site-2", "site-3"]
    _, sites = load(folder, n_clients=2)
    assert sites == ["site-1", "site-2"]


def test_a_secure_fedavg_job_deploys_and_its_server_sees_only_masked_updates(
    tmp_path: Path,
) -> None:
    # FedAvg(secure=True) on real node agents: the sites' keys come from their own state
    # dirs (local.secret), the server node sums masked vectors; the sum is FedAvg's.
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("secure_sums", min_clients=3)
    job.to_server(FedAvg(num_clients=3, num_rounds=1, secure=True))
    job.to_server(NPModel({"w": np.zeros(3)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    job.export_job(str(tmp_path / "jobs"))
    script.unlink()
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        ids = ["server", "site-1", "site-2", "site-3"]
        for node_id in ids:
            d.node(coord, node_id)
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, ids)
        with shoal.Client(coord.url, coord.user_token) as client:
            swarm_id = deploy_job(client, tmp_path / "jobs")
            status = wait_status(user, swarm_id, timeout=100)
            assert status["status"] == "succeeded", json.dumps(status, indent=1) + coord.output()
            weights = global_value(user, swarm_id, "weights")
            masked = client.results(swarm_id, "secagg.masked", alias="worker")
            plain = client.results(swarm_id, "update")
    assert sorted(masked) == ["site-1", "site-2", "site-3"] and plain == {}
    # site-1 sent [1 * delta, 1] = [1, 1, 1, 1] in the clear: it left only masked
    sent = np.asarray(masked["site-1"])
    assert sent.dtype == np.uint64 and not np.any(sent == np.uint64(2**24))
    # (1*1 + 2*2 + 3*3) / (1 + 2 + 3), exact to the 24-bit fixed point
    np.testing.assert_allclose(np.asarray(weights["w"]), np.full(3, 14 / 6), atol=1e-6)


# A user's own controller, in a module of the user's project (importable, as a FLARE
# job's custom code is): FedAvg over sampled sites, written by hand.
CONTROLLER = """
from shoal.job import ModelController
from shoal.job.client import FLModel


class SampledFedAvg(ModelController):
    def __init__(self, num_clients: int = 2, num_rounds: int = 2) -> None:
        super().__init__()
        self.num_clients = num_clients
        self.num_rounds = num_rounds

    def run(self) -> None:
        model = self.load_model()
        for r in range(self.num_rounds):
            clients = self.sample_clients(self.num_clients)
            model.current_round = r
            results = self.send_model_and_wait(targets=clients, data=model)
            self.info(f"round {r}: {sorted(m.meta['client_name'] for m in results)}")
            total = sum(m.meta["NUM_STEPS_CURRENT_ROUND"] for m in results)
            params = {
                k: sum(m.params[k] * m.meta["NUM_STEPS_CURRENT_ROUND"] / total for m in results)
                for k in model.params
            }
            model = self.update_model(model, FLModel(params=params, current_round=r))
            self.save_model(model)
"""


@pytest.mark.timeout(240)
def test_a_users_model_controller_deploys_and_equals_its_simulator_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_controllers.py").write_text(CONTROLLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    from my_controllers import SampledFedAvg  # type: ignore[import-not-found]

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("handmade", min_clients=2)
    job.to_server(SampledFedAvg(num_clients=2, num_rounds=3))
    job.to_server(NPModel({"w": np.zeros(3)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    job.export_job(str(tmp_path / "jobs"))
    sim = job.simulator_run(str(tmp_path / "ws"), n_clients=3, threads=2, seed=5)
    assert sim.ok, (sim.reason, [f.traceback for f in sim.failures])
    script.unlink()  # the deployment reads the export only
    with deployment(tmp_path) as d:
        coord = d.coordinator(db=f"sqlite:///{tmp_path / 'shoal.db'}")
        ids = ["server", "site-1", "site-2", "site-3"]
        for node_id in ids:
            d.node(coord, node_id)
        user = coord.user()
        d.clients.append(user)
        wait_nodes(user, ids)
        with shoal.Client(coord.url, coord.user_token) as client:
            swarm_id = deploy_job(client, tmp_path / "jobs", seed=5, n_clients=3)
            status = wait_status(user, swarm_id, timeout=150)
            assert status["status"] == "succeeded", json.dumps(status, indent=1) + coord.output()
            weights = global_value(user, swarm_id, "weights")
            rounds = [r.message for r in client.logs(swarm_id, task="controller")]
    # the same sites sampled (seeded) and the same model as the simulator's run
    assert [m for m in rounds if m.startswith("round ")] == [
        r.message for r in sim.logs(task="controller") if r.message.startswith("round ")
    ]
    np.testing.assert_allclose(np.asarray(weights["w"]), sim.globals["weights"]["w"], rtol=1e-12)
    assert not np.allclose(sim.globals["weights"]["w"], 0.0)
