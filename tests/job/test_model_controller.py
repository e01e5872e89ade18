"""A user's own ``ModelController.run()`` loop runs as a controller task on ``server``
over the sites' on-demand task (DESIGN 3, 3c): FedAvg written by hand gives the
built-in FedAvg's model; sites that die mid-round are left out or fail the run per
``min_clients``, never a hang."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoal import ShoalError
from shoal.job import FedAvg, FedJob, ModelController, NPModel, ScriptRunner
from shoal.job.client import FLModel

SCRIPT = """
import argparse
import numpy as np
import shoal.job.client as flare

p = argparse.ArgumentParser()
p.add_argument("--site", type=int)
args = p.parse_args()
flare.init()
while flare.is_running():
    m = flare.receive()
    if args.site == DIE_ON:
        import os; os._exit(3)
    new = {k: np.asarray(v) * 0.5 + args.site for k, v in m.params.items()}
    flare.send(flare.FLModel(params=new, metrics={"loss": 1.0 / args.site},
                             meta={"NUM_STEPS_CURRENT_ROUND": args.site}))
"""


class HandFedAvg(ModelController):
    """FedAvg with client sampling, written by hand as a FLARE user writes it."""

    def __init__(self, num_clients: int = 3, num_rounds: int = 3) -> None:
        super().__init__()
        self.num_clients = num_clients
        self.num_rounds = num_rounds

    def run(self) -> None:
        model = self.load_model()
        for r in range(self.num_rounds):
            clients = self.sample_clients(self.num_clients)
            model.current_round = r
            results = self.send_model_and_wait(targets=clients, data=model)
            self.info(f"round {r}: {[m.meta['client_name'] for m in results]}")
            total = sum(m.meta["NUM_STEPS_CURRENT_ROUND"] for m in results)
            params = {
                k: sum(m.params[k] * (m.meta["NUM_STEPS_CURRENT_ROUND"] / total) for m in results)
                for k in model.params
            }
            model = self.update_model(model, FLModel(params=params, current_round=r))
            self.save_model(model)


def _job(tmp_path: Path, controller: ModelController, min_clients: int = 3, die_on: int = 0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.replace("DIE_ON", str(die_on)))
    job = FedJob("handmade", min_clients=min_clients)
    job.to_server(controller)
    job.to_server(NPModel({"w": np.zeros(3), "b": np.ones(1)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    return job


@pytest.mark.timeout(180)
def test_a_hand_written_fedavg_loop_gives_the_built_in_fedavg_model(tmp_path: Path) -> None:
    own = _job(tmp_path / "own", HandFedAvg(num_clients=3, num_rounds=3))
    run = own.simulator_run(str(tmp_path / "own" / "ws"), n_clients=3, threads=2)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    built_in = _job(tmp_path / "builtin", FedAvg(num_clients=3, num_rounds=3))
    ref = built_in.simulator_run(str(tmp_path / "builtin" / "ws"), n_clients=3, threads=2)
    assert ref.ok, ref.reason
    for k in ("w", "b"):
        np.testing.assert_allclose(run.globals["weights"][k], ref.globals["weights"][k], rtol=1e-12)
    assert not np.allclose(run.globals["weights"]["w"], 0.0)
    logs = [r.message for r in run.logs(task="controller")]
    assert sum(m.startswith("round ") for m in logs) == 3, logs
    # the persistor wrote the last global model
    assert (tmp_path / "own" / "ws" / "server" / "models" / "FL_global_model.msgpack").exists()


@pytest.mark.timeout(180)
def test_client_sampling_is_seeded(tmp_path: Path) -> None:
    rounds = []
    for seed in (0, 0, 1):
        job = _job(tmp_path / f"s{len(rounds)}", HandFedAvg(num_clients=2, num_rounds=3))
        ws = tmp_path / f"s{len(rounds)}" / "ws"
        run = job.simulator_run(str(ws), n_clients=4, threads=2, seed=seed)
        assert run.ok, run.reason
        logs = [r.message for r in run.logs(task="controller")]
        rounds.append([m for m in logs if m.startswith("round")])
    assert rounds[0] == rounds[1] and rounds[0] != rounds[2], rounds
    assert all(m.count("site-") == 2 for m in rounds[0]), rounds


@pytest.mark.timeout(180)
@pytest.mark.parametrize("min_clients", [2, 3])
def test_a_site_dying_mid_round_continues_or_fails_per_min_clients(
    tmp_path: Path, min_clients: int
) -> None:
    job = _job(tmp_path, HandFedAvg(num_clients=3, num_rounds=2), min_clients, die_on=2)
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3, threads=2, raise_on_failure=False)
    if min_clients == 2:
        assert run.ok, run.reason
        logs = [r.message for r in run.logs(task="controller")]
        assert "round 0: ['site-1', 'site-3']" in logs, logs
    else:
        assert not run.ok
        assert "InvokeError" in run.reason and "site-2" in run.reason, run.reason


def test_a_model_controller_outside_a_job_run_says_so() -> None:
    with pytest.raises(ShoalError, match="outside a job run"):
        HandFedAvg().sample_clients(2)
