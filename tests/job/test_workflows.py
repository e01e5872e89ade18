"""User Executors routed by task names, Cyclic weight transfer and cross-site
evaluation, each compiled to an ordinary plan and run in the simulator; every answer is
checked against a hand computation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal import ShoalError
from shoal.job import (
    CrossSiteEval,
    CrossSiteModelEval,
    Cyclic,
    Executor,
    FedAvg,
    FedJob,
    Filter,
    FilterType,
    NPModel,
)
from shoal.job.client import FLModel

pytestmark = pytest.mark.timeout(120)


def _number(site: str) -> int:
    return int(site.rsplit("-", 1)[1])


class AddExecutor(Executor):
    """train: every variable plus ``add``; checks where it runs."""

    def __init__(self, add: float, site: str) -> None:
        self.add = add
        self.site = site

    def execute(self, task_name: str, shareable: Any, fl_ctx: Any, abort_signal: Any) -> Any:
        assert task_name == "train" and fl_ctx.get_identity_name() == self.site
        assert not abort_signal.triggered
        params = {k: np.asarray(v) + self.add for k, v in shareable.params.items()}
        return FLModel(params=params, meta={"NUM_STEPS_CURRENT_ROUND": 1})


class Refuses(Executor):
    """Routed to a task the workflow never sends: it must never run."""

    def execute(self, task_name: str, shareable: Any, fl_ctx: Any, abort_signal: Any) -> Any:
        raise AssertionError(f"Refuses ran for {task_name!r}")


class AddTen(Filter):
    """Adds 10 to every variable it sees."""

    def process(self, data: Any, task_name: str) -> Any:
        data.params = {k: np.asarray(v) + 10.0 for k, v in data.params.items()}
        return data


def _fedavg_job(name: str) -> FedJob:
    job = FedJob(name, min_clients=2)
    job.to_server(FedAvg(num_clients=2, num_rounds=1))
    job.to_server(NPModel({"w": np.zeros(2)}))
    job.to(AddExecutor(1.0, "site-1"), "site-1", tasks=["train"])
    job.to(Refuses(), "site-1", tasks=["validate"])
    job.to(AddExecutor(3.0, "site-2"), "site-2")  # default: every task
    return job


def test_user_executors_run_on_their_sites_for_their_task_names(tmp_path: Path) -> None:
    run = _fedavg_job("execs").simulator_run(str(tmp_path / "ws"))
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    np.testing.assert_allclose(run.globals["weights"]["w"], np.full(2, (1.0 + 3.0) / 2))


def test_a_task_without_a_routed_executor_is_named_before_running(tmp_path: Path) -> None:
    job = FedJob("unrouted")
    job.to_server(FedAvg(num_clients=1, num_rounds=1))
    job.to_server(NPModel({"w": np.zeros(1)}))
    job.to(Refuses(), "site-1", tasks=["validate"])
    with pytest.raises(ShoalError, match="site 'site-1' has no executor for task 'train'"):
        job.simulator_run(str(tmp_path / "ws"))


@pytest.mark.parametrize("kind", [FilterType.TASK_DATA, FilterType.TASK_RESULT])
@pytest.mark.parametrize("task", ["train", "validate"])
def test_a_sites_own_filter_on_each_task_name_in_the_simulator(
    tmp_path: Path, kind: FilterType, task: str
) -> None:
    job = _fedavg_job("filtered")
    job.to(AddTen(), "site-1", tasks=[task], filter_type=kind)  # site-1 only
    run = job.simulator_run(str(tmp_path / "ws"))
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    # routed to the round's task ("train"): site-1 sends 0 + 10 + 1 (data filter before
    # the executor, result filter after it: the same sum); otherwise untouched
    site1 = 11.0 if task == "train" else 1.0
    np.testing.assert_allclose(run.globals["weights"]["w"], np.full(2, (site1 + 3.0) / 2))


class Relay(Executor):
    """Cyclic: w -> 10 w + the site's number, so the value spells the visiting order."""

    def execute(self, task_name: str, shareable: Any, fl_ctx: Any, abort_signal: Any) -> Any:
        n = _number(fl_ctx.get_identity_name())
        w = np.asarray(shareable.params["w"])
        return FLModel(params={"w": 10 * w + n}, metrics={"round": shareable.current_round})


def _cyclic(name: str, order: str, rounds: int) -> FedJob:
    job = FedJob(name)
    job.to_server(Cyclic(num_clients=3, num_rounds=rounds, order=order))
    job.to_server(NPModel({"w": np.zeros(1)}))
    job.to_clients(Relay(), tasks=["train"])
    return job


def test_cyclic_fixed_order_passes_the_model_site_to_site(tmp_path: Path) -> None:
    from shoal._codec import decode

    run = _cyclic("cyc", "fixed", 2).simulator_run(str(tmp_path / "ws"), n_clients=3)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    # by hand: 0 -> 1 -> 12 -> 123 (round 0) -> 1231 -> 12312 -> 123123 (round 1)
    assert float(run.globals["weights"]["w"][0]) == 123123.0
    models = tmp_path / "ws" / "server" / "models"
    assert float(decode((models / "round_0.msgpack").read_bytes())["w"][0]) == 123.0


def test_cyclic_random_order_is_the_engines_chain(tmp_path: Path) -> None:
    run = _cyclic("cycr", "random", 3).simulator_run(str(tmp_path / "ws"), n_clients=3, seed=4)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    digits = str(int(run.globals["weights"]["w"][0]))
    rounds = [digits[i : i + 3] for i in range(0, 9, 3)]
    assert len(digits) == 9 and all(sorted(r) == ["1", "2", "3"] for r in rounds), digits
    again = _cyclic("cycr", "random", 3).simulator_run(str(tmp_path / "ws2"), n_clients=3, seed=4)
    assert again.globals["weights"]["w"][0] == run.globals["weights"]["w"][0]  # seeded


def test_cyclic_options_are_checked() -> None:
    with pytest.raises(ShoalError, match="order"):
        Cyclic(order="backwards")
    with pytest.raises(ShoalError, match="num_rounds"):
        Cyclic(num_rounds=0)


class Evaluator(Executor):
    """submit_model: the site's model is [its number]; validate: 10 * model + site."""

    def execute(self, task_name: str, shareable: Any, fl_ctx: Any, abort_signal: Any) -> Any:
        n = _number(fl_ctx.get_identity_name())
        if task_name == "submit_model":
            return FLModel(params={"w": np.array([float(n)])})
        assert task_name == "validate", task_name
        score = 10 * float(np.asarray(shareable.params["w"])[0]) + n
        return FLModel(metrics={"score": score, "owner_len": len(shareable.meta["model_owner"])})


@pytest.mark.parametrize("cls", [CrossSiteModelEval, CrossSiteEval])
def test_cross_site_evaluation_matrix(tmp_path: Path, cls: type) -> None:
    job = FedJob("cse", min_clients=3)
    job.to_server(cls())
    job.to_server(NPModel({"w": np.array([7.0])}))  # the server's model
    job.to_clients(Evaluator())
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    want = {
        f"site-{j}": {
            "SRV_server": {"score": 70.0 + j, "owner_len": 10.0},
            **{f"site-{i}": {"score": 10.0 * i + j, "owner_len": 6.0} for i in (1, 2, 3)},
        }
        for j in (1, 2, 3)
    }
    assert run.globals["cross_val_results"] == want
    saved = tmp_path / "ws" / "server" / "cross_site_val" / "cross_val_results.json"
    assert json.loads(saved.read_text()) == want


def test_cross_site_evaluation_on_participating_clients_only(tmp_path: Path) -> None:
    job = FedJob("csep")
    job.to_server(CrossSiteModelEval(participating_clients=["site-1", "site-3"]))
    job.to_clients(Evaluator())
    run = job.simulator_run(str(tmp_path / "ws"), n_clients=3)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    matrix = run.globals["cross_val_results"]
    assert sorted(matrix) == ["site-1", "site-3"]  # no server model: no persistor
    assert {k: v["score"] for k, v in matrix["site-3"].items()} == {"site-1": 13.0, "site-3": 33.0}
