"""Every simulated node enforces its dataset's budget, and DP-FedAvg trains within it."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.digits import Digits, run_digits

import shoal
import shoal.privacy as privacy
from shoal.strategies import DPFedAvg

DELTA = 1e-5


def _eps(z: float, rounds: int) -> float:
    return privacy.epsilon([privacy.Charge("gaussian", z, count=rounds)], DELTA)


@pytest.mark.slow
def test_dp_fedavg_on_digits_reaches_its_stated_accuracy_within_the_budget(
    digits: Digits,
) -> None:
    # docs/privacy.md's table: 100 nodes, 10 rounds, z = 2, C = 1 -> epsilon 7.51.
    strategy = DPFedAvg(clip=1.0, noise_multiplier=2.0, dataset="digits", seed=0)
    eps = _eps(2.0, 10)
    assert eps == pytest.approx(7.51, abs=0.01)
    budget = {"digits": {"epsilon": eps + 0.01, "delta": DELTA}}
    run, acc = run_digits(strategy, digits, nodes=100, rounds=10, partition="iid", privacy=budget)
    print(f"DP-FedAvg epsilon {eps:.2f}: test accuracy {acc:.3f}")
    assert acc >= 0.80
    assert run.iterations == 10


def test_a_round_past_the_budget_is_refused_and_the_run_fails_saying_why(
    digits: Digits,
) -> None:
    # Two rounds fit in the budget, the third does not: every node refuses it.
    budget = {"digits": {"epsilon": (_eps(1.0, 2) + _eps(1.0, 3)) / 2, "delta": DELTA}}
    strategy = DPFedAvg(clip=1.0, noise_multiplier=1.0, dataset="digits", seed=0)
    run, _ = run_digits(
        strategy, digits, nodes=3, rounds=5, partition="iid", privacy=budget, ok=False
    )
    assert run.status == "failed" and run.iterations == 3
    failure = run.failures[0]
    assert failure.alias == "worker"
    text = failure.error
    assert f"node {failure.node_id!r} refuses to spend privacy budget on dataset 'digits'" in text
    assert f"spent {_eps(1.0, 2):.3g}, remaining" in text, text
    assert "ShoalError" in failure.traceback and "larger [privacy] budget" in text


QUERY = """
import numpy as np
from shoal.runtime import Task
from shoal.privacy import Laplace, bounded_count, spend


class Query(Task):
    def run(self):
        mech = Laplace(epsilon=0.5)
        answer = spend(self, "digits", mech.charge(label="count"))
        y = self.local.get_dataset("digits")["y"]
        self.world.results.add("count", bounded_count(int(np.sum(y == 3)), mech))
        self.world.results.add("remaining", answer["remaining"])


def main():
    Query().run()
"""


class Counting(shoal.Swarm):
    def __init__(self) -> None:
        super().__init__()
        self.max_iterations = 3
        self.query = shoal.Task(shoal.Module(QUERY, datasets=["digits"]), method="all")

    def execute(self) -> shoal.Task:
        return self.query()


def test_dp_queries_spend_until_the_node_refuses(digits: Digits) -> None:
    path, _, _ = digits
    run = shoal.simulate(
        Counting(),
        nodes=2,
        datasets={"digits": path},
        partition="iid",
        executor="inline",
        privacy={"digits": {"epsilon": 1.2, "delta": DELTA}},
        raise_on_failure=False,
    )
    assert not run.ok and run.iterations == 3  # queries 1 and 2 fit; the third does not
    remaining = run.results.select("remaining", alias="query", iteration=1)
    assert list(np.round(list(remaining.values()), 3)) == [0.2, 0.2]
    assert run.failures and all("remaining 0.2" in f.error for f in run.failures)


def test_simulate_rejects_a_malformed_budget(digits: Digits) -> None:
    with pytest.raises(shoal.ShoalError) as err:
        shoal.simulate(Counting(), nodes=1, privacy={"digits": {"epsilon": -1}})
    assert err.value.code == "sim.privacy"
