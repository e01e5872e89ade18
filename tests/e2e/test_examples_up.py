"""The other examples run unchanged on a real federation (``shoal up``), with the same
answers as one machine."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shoal

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _deploy_and_wait(up: Any, swarm: Path) -> str:
    deployed = up.shoal("deploy", str(swarm))
    assert deployed.returncode == 0, deployed.stderr + up.diagnostics()
    swarm_id: str = deployed.stdout.strip()
    watched = up.shoal("status", swarm_id, "--watch", "--timeout", "150", timeout=170)
    assert watched.returncode == 0, watched.stdout + watched.stderr + up.diagnostics()
    return swarm_id


def test_wordcount_on_shoal_up_equals_one_machine(start_up: Callable[..., Any]) -> None:
    data = EXAMPLES / "mapreduce_wordcount" / "data"
    up = start_up("--nodes", "3", "--dataset", f"texts={data}", "--partition", "iid")
    up.wait_ready()
    swarm_id = _deploy_and_wait(up, EXAMPLES / "mapreduce_wordcount" / "swarm.py")
    spec = importlib.util.spec_from_file_location(
        "wc_mapper", EXAMPLES / "mapreduce_wordcount" / "modules" / "mapper.py"
    )
    assert spec and spec.loader
    mapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mapper)
    expected: Counter[str] = Counter()
    for f in sorted(data.glob("*.txt")):
        expected.update(mapper.count_words(f.read_text()))
    with shoal.Client(up.url, up.token) as client:
        assert Counter(client.get_global(swarm_id, "counts")) == expected


def test_federated_mean_on_shoal_up_equals_pandas(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    pooled = datasets.load_breast_cancer(as_frame=True).frame
    path = tmp_path / "cancer.csv"
    pooled.to_csv(path, index=False)
    up = start_up("--nodes", "3", "--dataset", f"cancer={path}", "--partition", "iid")
    up.wait_ready()
    swarm_id = _deploy_and_wait(up, EXAMPLES / "federated_mean" / "swarm.py")
    with shoal.Client(up.url, up.token) as client:
        count = client.get_global(swarm_id, "count")
        mean = client.get_global(swarm_id, "mean")
    columns = list(pooled.columns)
    assert all(count[c] == pooled[c].count() for c in columns)
    assert np.allclose([mean[c] for c in columns], pooled.mean()[columns].to_numpy())


def test_fedavg_torch_on_shoal_up(start_up: Callable[..., Any], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # in the dev extra: CI runs this
    spec = importlib.util.spec_from_file_location("torch_run", EXAMPLES / "fedavg_torch" / "run.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    X_fed, y_fed, X_test, y_test = example.digits(0)
    path = tmp_path / "digits.npz"
    np.savez(path, X=X_fed, y=y_fed)
    up = start_up("--nodes", "3", "--dataset", f"digits={path}", "--partition", "iid")
    up.wait_ready()
    swarm_id = _deploy_and_wait(up, EXAMPLES / "fedavg_torch" / "swarm.py")
    with shoal.Client(up.url, up.token) as client:
        weights = client.get_global(swarm_id, "weights")
        curve = [m.value for m in client.metrics(swarm_id, name="val_accuracy", frame=False)]
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    model = example.make_model(0)
    model.load_state_dict(weights)
    assert len(curve) == 5
    assert example.count_correct(model, X_test, y_test) / len(y_test) >= 0.85
