"""FedAvg(secure=...): the job dialect's secure aggregation is shoal.strategies.SecureFedAvg.

A numpy softmax regression on the digits, four sites, the Client API script unchanged:
the secure run reaches plain FedAvg's model, the server's inputs are masked ring
elements, a site lost after sharing its keys is recovered, and the plan's secure tasks
are the very tasks the Swarm dialect's SecureFedAvg builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.digits import accuracy, digits_data

import shoal
from shoal import ShoalError
from shoal.job import (
    ExcludeVars,
    FedAvg,
    FedJob,
    FilterType,
    IntimeModelSelector,
    NPModel,
    ScriptRunner,
)
from shoal.strategies import SecureFedAvg

SCRIPT = """
import argparse
import numpy as np
import shoal.job.client as flare

p = argparse.ArgumentParser()
p.add_argument("--data")
p.add_argument("--drop", default="")
args = p.parse_args()
with np.load(args.data) as z:
    X, y = z["X"], z["y"]
Y = np.eye(10)[y]
flare.init()
while flare.is_running():
    m = flare.receive()
    if flare.get_site_name() == args.drop:
        raise RuntimeError("this site drops after sharing its keys")
    W, b = np.array(m.params["W"]), np.array(m.params["b"])
    for _ in range(10):  # full-batch gradient descent: deterministic
        z = X @ W + b
        P = np.exp(z - z.max(1, keepdims=True))
        G = (P / P.sum(1, keepdims=True) - Y) / len(y)
        W, b = W - 0.5 * X.T @ G, b - 0.5 * G.sum(0)
    acc = float(np.mean(np.argmax(X @ W + b, 1) == y))
    flare.send(flare.FLModel(params={"W": W, "b": b}, metrics={"accuracy": acc},
                             meta={"NUM_STEPS_CURRENT_ROUND": len(y)}))
"""

SITES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """Per-site shares of the digits (site-1..4, unequal sizes) and the test split."""
    folder = tmp_path_factory.mktemp("digits")
    path, X_test, y_test = digits_data(folder)
    with np.load(path) as z:
        X, y = z["X"], z["y"]
    cuts = np.cumsum([0, 300, 350, 380])  # unequal: the weighting matters
    for i, part in enumerate(np.split(np.arange(len(y)), cuts[1:]), start=1):
        np.savez(folder / f"site-{i}.npz", X=X[part], y=y[part])
    (folder / "train.py").write_text(SCRIPT)
    return folder, X_test, y_test


def _job(folder: Path, secure: Any, rounds: int = 3, drop: str = "", **kw: Any) -> FedJob:
    job = FedJob("digits_secure" if secure else "digits_plain", min_clients=3)
    job.to_server(FedAvg(num_clients=SITES, num_rounds=rounds, secure=secure, **kw))
    job.to_server(NPModel({"W": np.zeros((64, 10)), "b": np.zeros(10)}))
    args = f"--data {folder}/site-{{i}}.npz" + (f" --drop {drop}" if drop else "")
    job.to_clients(ScriptRunner(str(folder / "train.py"), script_args=args, framework="numpy"))
    return job


def _run(job: FedJob, ws: Path) -> shoal.SimulationRun:
    run = job.simulator_run(str(ws), n_clients=SITES, executor="inline", seed=0)
    assert run.ok, (run.reason, [f.traceback for f in run.failures])
    return run


@pytest.fixture(scope="module")
def runs(
    data: tuple[Path, np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> tuple[shoal.SimulationRun, shoal.SimulationRun]:
    folder = data[0]
    ws = tmp_path_factory.mktemp("ws")
    return _run(_job(folder, False), ws / "plain"), _run(_job(folder, True), ws / "secure")


@pytest.mark.timeout(180)
def test_secure_fedavg_job_reaches_plain_fedavgs_model(
    data: tuple[Path, np.ndarray, np.ndarray],
    runs: tuple[shoal.SimulationRun, shoal.SimulationRun],
) -> None:
    _, X_test, y_test = data
    plain, secure = runs
    assert plain.iterations == secure.iterations == 3
    for k in ("W", "b"):  # the same training, summed in 24-bit fixed point
        np.testing.assert_allclose(
            secure.globals["weights"][k], plain.globals["weights"][k], rtol=0, atol=1e-5
        )
    acc = accuracy(secure.globals["weights"], X_test, y_test)
    assert acc == accuracy(plain.globals["weights"], X_test, y_test)
    assert acc > 0.8, acc  # it learned: the comparison means something
    logs = " ".join(r.message for r in secure.logs(task="secagg_aggregator"))
    assert "secure sum of 4 updates" in logs, logs


@pytest.mark.timeout(180)
def test_the_server_sees_only_masked_ring_elements(
    runs: tuple[shoal.SimulationRun, shoal.SimulationRun],
) -> None:
    from shoal.privacy._secagg import encode

    plain, secure = runs
    assert secure.results.select("update") == {}  # no plaintext update left a site
    masked = secure.results.select("secagg.masked", alias="worker")
    assert sorted(masked) == [f"site-{i}" for i in range(1, SITES + 1)]
    seen = np.asarray(masked["site-1"])
    # What site-1 would have sent in the clear: [n * delta, n] (plain FedAvg's update,
    # from the same deterministic training on the same global model).
    record = plain.results.select("update")["site-1"]
    n = record["num_examples"]
    clear = np.concatenate([n * np.asarray(record["delta"]), [float(n)]])
    assert seen.dtype == np.uint64 and seen.shape == clear.shape
    enc = encode(clear)
    assert not np.any(seen == enc)

    # Uniform-looking: the top 4 bits of every element spread over all 16 values
    # (chi-square, 15 dof, p < 1e-6 above 50); small fixed-point numbers use 2 at most.
    def top(v: np.ndarray) -> np.ndarray:
        return np.bincount((v >> np.uint64(60)).astype(np.int64), minlength=16)

    counts = top(seen)
    expected = seen.size / 16
    assert ((counts - expected) ** 2 / expected).sum() < 50, counts
    assert (top(enc) > 0).sum() <= 2
    # ...and uncorrelated with the update (|r| ~ 1/sqrt(651) = 0.04 by chance).
    r = np.corrcoef(seen.astype(np.float64), clear)[0, 1]
    assert abs(r) < 0.2, r


@pytest.mark.timeout(180)
def test_a_site_dropping_after_sharing_its_keys_is_recovered(
    data: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    # site-2's script fails every round after the site advertised and shared its keys
    # (3 of 4 sites are enough: min_clients=3, threshold 3 of each share group).
    folder = data[0]
    secure = _run(_job(folder, True, rounds=2, drop="site-2"), tmp_path / "secure")
    plain = _run(_job(folder, False, rounds=2, drop="site-2"), tmp_path / "plain")
    assert sorted(secure.results.select("secagg.masked", alias="worker")) == [
        "site-1",
        "site-3",
        "site-4",
    ]
    for k in ("W", "b"):  # the secure sum of the three survivors, as plain FedAvg's
        np.testing.assert_allclose(
            secure.globals["weights"][k], plain.globals["weights"][k], rtol=0, atol=1e-5
        )
    logs = " ".join(r.message for r in secure.logs(task="secagg_aggregator"))
    assert "secure sum of 3 updates" in logs and "1 dropped after sharing" in logs, logs


def _modules(swarm: shoal.Swarm) -> dict[str, str]:
    """{task alias: module source} of a swarm's shoal.strategies secure tasks."""
    out = {}
    for name in ("advertise", "share", "reveal", "aggregator"):
        task = getattr(swarm.secure, name)  # type: ignore[attr-defined]
        out[task.alias] = task.module._source
    return out


@pytest.mark.timeout(60)
def test_the_job_plan_runs_shoal_strategies_secure_tasks(tmp_path: Path) -> None:
    # The job's secure tasks are the ones SecureFedAvg.tasks() builds for a Swarm, the
    # same source byte for byte (so the same shoal.strategies._secure_entry code), and
    # the site masks in train_round (shoal.strategies), which calls shoal.privacy.
    from shoal.job._run import job_swarm
    from shoal.strategies._keys import config_key

    (tmp_path / "train.py").write_text(SCRIPT)
    chosen = SecureFedAvg(threshold=3, neighbours=2)
    job = _job(tmp_path, chosen)
    swarm = job_swarm(job, [f"site-{i}" for i in range(1, SITES + 1)], tmp_path / "w")

    class Reference(shoal.Swarm):
        def __init__(self) -> None:
            super().__init__()
            self.secure = chosen.tasks(self, datasets=["digits"])

    reference = Reference()
    assert _modules(swarm) == _modules(reference)
    key = config_key("weights")
    assert swarm.get_global(key) == reference.get_global(key)
    assert swarm.get_global(key)["secagg"]["threshold"] == 3
    aggregator = swarm.secure.aggregator  # type: ignore[attr-defined]
    assert aggregator.specified_ids == ("server",)
    assert swarm.secure.advertise.specified_ids == tuple(  # type: ignore[attr-defined]
        f"site-{i}" for i in range(1, SITES + 1)
    )


@pytest.mark.timeout(60)
def test_the_secure_job_exports_and_loads_back(tmp_path: Path) -> None:
    from shoal._job.load import load_job

    (tmp_path / "train.py").write_text(SCRIPT)
    folder = _job(tmp_path, SecureFedAvg(threshold=3, neighbours=2)).export_job(
        str(tmp_path / "jobs")
    )
    loaded = load_job(folder)
    (flow,) = (c for c in loaded.apps["server"].components.values() if isinstance(c, FedAvg))
    assert flow.secure == SecureFedAvg(threshold=3, neighbours=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kwargs", "code", "match"),
    [
        ({"num_clients": 2}, "job.config", "at least 3 sites per round"),
        ({"stop_cond": "accuracy >= 0.9"}, "job.unsupported", "never the sites' metrics"),
        ({"patience": 2}, "job.unsupported", "never the sites' metrics"),
        ({"secure": "yes"}, "job.config", "secure='yes'"),
    ],
)
def test_fedavg_refuses_what_cannot_work_with_secure(
    kwargs: dict[str, Any], code: str, match: str
) -> None:
    args: dict[str, Any] = {"num_clients": 3, "num_rounds": 1, "secure": True, **kwargs}
    with pytest.raises(ShoalError, match=match) as e:
        FedAvg(**args)
    assert e.value.code == code and e.value.hint


@pytest.mark.timeout(60)
def test_secure_jobs_refuse_what_the_server_cannot_do(tmp_path: Path) -> None:
    from shoal.job._run import job_swarm

    (tmp_path / "train.py").write_text(SCRIPT)
    sites = [f"site-{i}" for i in range(1, SITES + 1)]
    few = _job(tmp_path, True)
    with pytest.raises(ShoalError, match="on 2 sites") as e:
        job_swarm(few, sites[:2], tmp_path / "w")
    assert e.value.code == "job.config"
    sampled = FedJob("sampled", min_clients=3)
    sampled.to_server(FedAvg(num_clients=3, num_rounds=1, secure=True))
    sampled.to_server(NPModel({"w": np.zeros(2)}))
    sampled.to_clients(ScriptRunner(str(tmp_path / "train.py"), framework="numpy"))
    with pytest.raises(ShoalError, match="num_clients=3 on 4 sites") as e:
        job_swarm(sampled, sites, tmp_path / "w")
    selector = _job(tmp_path, True)
    selector.to_server(IntimeModelSelector(key_metric="accuracy"))
    with pytest.raises(ShoalError, match="IntimeModelSelector") as e:
        job_swarm(selector, sites, tmp_path / "w")
    assert e.value.code == "job.unsupported"
    filtered = _job(tmp_path, True)
    filtered.to_server(ExcludeVars(["b"]), filter_type=FilterType.TASK_RESULT)
    with pytest.raises(ShoalError, match="result filter on the server") as e:
        job_swarm(filtered, sites, tmp_path / "w")
    assert e.value.code == "job.config" and "to_clients" in (e.value.hint or "")
    # A result filter on the sites runs before masking: allowed.
    on_sites = _job(tmp_path, True)
    on_sites.to_clients(ExcludeVars(["b"]), filter_type=FilterType.TASK_RESULT)
    job_swarm(on_sites, sites, tmp_path / "w")
