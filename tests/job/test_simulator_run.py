"""simulator_run: the built-in FedAvg as an ordinary plan on server + site-1..N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoal import ShoalError
from shoal.job import (
    ExcludeVars,
    FedAvg,
    FedJob,
    FilterType,
    ModelController,
    NPModel,
    ScriptRunner,
)

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
    assert flare.get_site_name() == f"site-{args.site}"
    new = {k: np.asarray(v) + args.site for k, v in m.params.items()}
    acc = 0.1 * args.site - 0.01 * (m.current_round - 1) ** 2
    flare.send(flare.FLModel(params=new, metrics={"accuracy": acc},
                             meta={"NUM_STEPS_CURRENT_ROUND": args.site}))
"""


def _job(tmp_path: Path, rounds: int) -> FedJob:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("sums", min_clients=3)
    job.to_server(FedAvg(num_clients=3, num_rounds=rounds))
    job.to_server(NPModel({"w": np.zeros(3), "b": np.zeros(1)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    return job


@pytest.mark.timeout(120)
def test_fedavg_weighted_by_num_steps(tmp_path: Path) -> None:
    job = _job(tmp_path, rounds=2)
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3, threads=2)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    # each round adds sum(i * i) / sum(i) = 14 / 6 to every entry
    np.testing.assert_allclose(run.globals["weights"]["w"], np.full(3, 2 * 14 / 6))
    assert run.iterations == 2


@pytest.mark.timeout(120)
def test_result_filter_runs_on_the_site(tmp_path: Path) -> None:
    job = _job(tmp_path, rounds=1)
    job.to_clients(ExcludeVars(["b"]), filter_type=FilterType.TASK_RESULT, tasks=["train"])
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3, threads=2)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    np.testing.assert_allclose(run.globals["weights"]["w"], np.full(3, 14 / 6))
    np.testing.assert_array_equal(run.globals["weights"]["b"], np.zeros(1))  # never left


class ByHand(ModelController):
    def run(self) -> None:
        self.send_model_and_wait(targets=self.sample_clients(2), data=self.load_model())


@pytest.mark.timeout(60)
def test_own_model_controller_without_runners_fails_clearly(tmp_path: Path) -> None:
    # Its run() runs as a controller task (tests/job/test_model_controller.py); a job
    # whose sites have no script is refused before anything runs.
    job = FedJob("own")
    job.to_server(ByHand())
    job.to_server(NPModel({"w": np.zeros(1)}))
    with pytest.raises(ShoalError, match="site 'site-1' has no executor"):
        job.simulator_run(str(tmp_path), n_clients=2)


DYING = SCRIPT.replace(
    "    m = flare.receive()\n",
    "    m = flare.receive()\n    if args.site == 2:\n        import os; os._exit(3)\n",
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("min_clients", [2, 3])
def test_site_dying_mid_round_continues_or_fails_per_min_clients(
    tmp_path: Path, min_clients: int
) -> None:
    script = tmp_path / "train.py"
    script.write_text(DYING)
    job = FedJob("dying", min_clients=min_clients)
    job.to_server(FedAvg(num_clients=3, num_rounds=1))
    job.to_server(NPModel({"w": np.zeros(2)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3, raise_on_failure=False)
    if min_clients == 2:
        assert run.ok, run.reason
        # sites 1 and 3: (1*1 + 3*3) / (1 + 3)
        np.testing.assert_allclose(run.globals["weights"]["w"], np.full(2, 10 / 4))
    else:
        assert not run.ok and "min_results=3" in run.reason


@pytest.mark.timeout(120)
def test_external_process_runner_in_the_simulator(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("ext", min_clients=2)
    job.to_server(FedAvg(num_clients=2, num_rounds=1))
    job.to_server(NPModel({"w": np.zeros(2)}))
    runner = ScriptRunner(
        str(script), script_args="--site {i}", launch_external_process=True, framework="numpy"
    )
    job.to_clients(runner)
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=2)
    assert run.ok, run.reason
    np.testing.assert_allclose(run.globals["weights"]["w"], np.full(2, 5 / 3))


@pytest.mark.timeout(120)
def test_persistor_writes_each_round_and_the_best(tmp_path: Path) -> None:
    import json

    from shoal._codec import decode
    from shoal.job import IntimeModelSelector

    job = _job(tmp_path, rounds=3)
    job.to_server(IntimeModelSelector(key_metric="accuracy"))
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3)
    models = tmp_path / "ws" / "server" / "models"
    for r in range(3):
        w = decode((models / f"round_{r}.msgpack").read_bytes())
        np.testing.assert_allclose(w["w"], np.full(3, (r + 1) * 14 / 6))
    last = decode((models / "FL_global_model.msgpack").read_bytes())
    np.testing.assert_allclose(last["w"], run.globals["weights"]["w"])
    # the script's accuracy peaks in round 1, which scores the model after round 0
    best = json.loads((models / "best.json").read_text())
    assert best == {"round": 0, "key_metric": "accuracy", "value": pytest.approx(14 / 60)}
    np.testing.assert_allclose(
        decode((models / "best_FL_global_model.msgpack").read_bytes())["w"], np.full(3, 14 / 6)
    )


@pytest.mark.timeout(120)
def test_stop_condition_ends_the_job_early(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("stops", min_clients=3)
    # round r's weighted accuracy is 14/60 - 0.01 (r - 1)^2: 0.2233, 0.2333, 0.2233
    job.to_server(FedAvg(num_clients=3, num_rounds=6, stop_cond="accuracy >= 0.23"))
    job.to_server(NPModel({"w": np.zeros(1)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3)
    assert run.ok and run.iterations == 2, (run.iterations, run.reason)


@pytest.mark.timeout(10)
def test_patience() -> None:
    from shoal.job._server import should_stop

    h = [{"a": 0.5}, {"a": 0.6}, {"a": 0.55}, {"a": 0.58}]
    assert should_stop(h, ["a", ">=", 0.9], 2) == "a did not improve for 2 rounds"
    assert should_stop(h, ["a", ">=", 0.9], 3) == ""
    assert should_stop(h, ["a", ">=", 0.58], None).startswith("a 0.58 >= 0.58")
    assert should_stop([{"l": 2.0}, {"l": 1.0}], ["l", "<", 0.5], 1) == ""


@pytest.mark.timeout(120)
def test_fedopt_is_shoal_strategies_server_step(tmp_path: Path) -> None:
    from shoal.job import FedOpt
    from shoal.strategies import ClientUpdate, FedAdam

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("opt", min_clients=3)
    job.to_server(FedOpt(num_clients=3, num_rounds=1, optimizer="adam", lr=0.05))
    job.to_server(NPModel({"w": np.zeros(2)}))
    job.to_clients(ScriptRunner(str(script), script_args="--site {i}", framework="numpy"))
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3)
    ups = [ClientUpdate(np.full(2, float(i)), i) for i in (1, 2, 3)]
    want, _ = FedAdam(lr=0.05).aggregate(np.zeros(2), ups)
    np.testing.assert_allclose(run.globals["weights"]["w"], want)


@pytest.mark.timeout(120)
def test_exported_job_loads_back_and_runs_the_same(tmp_path: Path) -> None:
    from shoal._job.load import load_job

    job = _job(tmp_path, rounds=2)
    job.to_clients(ExcludeVars(["b"]), filter_type=FilterType.TASK_RESULT, tasks=["train"])
    folder = job.export_job(str(tmp_path / "jobs"))
    (tmp_path / "train.py").unlink()  # the export carries the script
    loaded = load_job(folder)
    assert sorted(loaded.apps) == sorted(job.apps)
    run = loaded.simulator_run(str(tmp_path / "ws"), n_clients=3)
    np.testing.assert_allclose(run.globals["weights"]["w"], np.full(3, 2 * 14 / 6))
    np.testing.assert_array_equal(run.globals["weights"]["b"], np.zeros(1))
