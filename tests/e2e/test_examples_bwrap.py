"""Every example runs end to end on a real federation (``shoal up``) whose node agents
run each task in the bubblewrap sandbox, with the same answers as one machine.

One federation serves all three examples (its start-up is the slow part on 2 cores).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shoal
from shoal._exec.probe import probe_bwrap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def _deploy_and_wait(up: Any, swarm: Path) -> str:
    deployed = up.shoal("deploy", str(swarm))
    assert deployed.returncode == 0, deployed.stderr + up.diagnostics()
    swarm_id: str = deployed.stdout.strip()
    watched = up.shoal("status", swarm_id, "--watch", "--timeout", "150", timeout=170)
    assert watched.returncode == 0, watched.stdout + watched.stderr + up.diagnostics()
    return swarm_id


def _word_counts(data: Path) -> Counter[str]:
    spec = importlib.util.spec_from_file_location(
        "wc_mapper_bwrap", EXAMPLES / "mapreduce_wordcount" / "modules" / "mapper.py"
    )
    assert spec and spec.loader
    mapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mapper)
    expected: Counter[str] = Counter()
    for f in sorted(data.glob("*.txt")):
        expected.update(mapper.count_words(f.read_text()))
    return expected


def test_the_examples_run_in_the_bwrap_sandbox(
    start_up: Callable[..., Any], tmp_path: Path
) -> None:
    if (why := probe_bwrap()) is not None:
        pytest.skip(why)
    sk = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split

    digits = sk.load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    X_fed, X_test, y_fed, y_test = train_test_split(
        X, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    np.savez(tmp_path / "digits.npz", X=X_fed, y=y_fed)
    pooled = sk.load_breast_cancer(as_frame=True).frame
    pooled.to_csv(tmp_path / "cancer.csv", index=False)
    texts = EXAMPLES / "mapreduce_wordcount" / "data"

    up = start_up(
        *("--nodes", "3", "--executor", "bwrap", "--partition", "iid"),
        *("--dataset", f"digits={tmp_path / 'digits.npz'}"),
        *("--dataset", f"cancer={tmp_path / 'cancer.csv'}"),
        *("--dataset", f"texts={texts}"),
    )
    up.wait_ready()
    logs = [p.read_text() for p in sorted(up.state.glob("nodes/*/agent.log"))]
    assert len(logs) == 3 and all("executor 'bwrap'" in log for log in logs), up.diagnostics()
    assert not any("falling back to 'process'" in log for log in logs)

    wordcount = _deploy_and_wait(up, EXAMPLES / "mapreduce_wordcount" / "swarm.py")
    mean = _deploy_and_wait(up, EXAMPLES / "federated_mean" / "swarm.py")
    fedavg = _deploy_and_wait(up, EXAMPLES / "fedavg_digits" / "swarm.py")

    with shoal.Client(up.url, up.token) as client:
        assert Counter(client.get_global(wordcount, "counts")) == _word_counts(texts)
        count, means = client.get_global(mean, "count"), client.get_global(mean, "mean")
        weights = client.get_global(fedavg, "weights")
    columns = list(pooled.columns)
    assert all(count[c] == pooled[c].count() for c in columns)
    assert np.allclose([means[c] for c in columns], pooled.mean()[columns].to_numpy())
    predicted = np.argmax(X_test @ weights["W"] + weights["b"], axis=1)
    assert float(np.mean(predicted == y_test)) >= 0.85

    assert up.signal() == 0
    up.assert_nothing_left()
