"""A node lost in the middle of a ``Sequential`` chain or a ``RoundRobin`` ring, end to
end in ``shoal.testing.Federation`` (the simulator's engine and driver, task code inline,
a virtual clock, injected faults): with ``retries`` the artifact finishes with the right
answer; without, it fails with a reason naming the node and the step, in bounded
(virtual) time; never a hang (issue 17, Must show 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from steps_user_ops import Gather, Visit

from shoal.steps import Artifact, Collect, Finalize, RoundRobin, Sequential, Step
from shoal.testing import Federation

pytestmark = pytest.mark.timeout(120)

NODES = ["node-00000", "node-00001", "node-00002"]


def _federation(tmp_path: Path) -> Federation:
    path = tmp_path / "t.csv"
    pd.DataFrame({"v": [1.0]}).to_csv(path, index=False)
    return Federation(nodes={n: {"t": path} for n in NODES})


def _artifact(step: Step) -> Artifact:
    return Artifact(steps=[step, Finalize(operation=Gather())], dataset="t", name="lost")


def _middle(fed: Federation) -> str:
    """The node in the middle of the chain order: the second one to run step0."""
    probe = fed.run(_artifact(Sequential(Visit(), Collect())))
    assert probe.ok, probe.reason
    (order,) = probe.globals["all"]
    return str(order[1])


KINDS = [
    ("chain", lambda r, t: Sequential(Visit(), Collect(), retries=r, timeout=t)),
    ("ring", lambda r, t: RoundRobin(Visit(), Collect(), retries=r, timeout=t)),
]  # fmt: skip


@pytest.mark.parametrize("fault", ["crash", "hang"])
@pytest.mark.parametrize(("shape", "make"), KINDS)
def test_a_node_lost_mid_chain_or_ring_is_retried_to_the_right_answer(
    tmp_path: Path, shape: str, make: object, fault: str
) -> None:
    fed = _federation(tmp_path)
    middle = _middle(fed)
    start = fed.clock.now()
    # The middle node's first attempt of step0 (its slot in round 1 of the ring too, as
    # a fault matches every instance of that node's first attempt) dies.
    fed.inject(fault, node=middle, task="step0")  # type: ignore[arg-type]
    t0 = time.monotonic()
    run = fed.run(_artifact(make(1, 30.0)))  # type: ignore[operator]
    assert run.ok, run.reason
    finals = run.globals["all"]
    assert len(finals) == (1 if shape == "chain" else 3)
    assert all(sorted(v) == NODES for v in finals), finals  # every node's contribution
    kind = "timeout" if fault == "hang" else "crash"
    assert {(f.node_id, f.alias, f.kind) for f in run.failures} == {(middle, "step0", kind)}
    assert time.monotonic() - t0 < 30
    assert fed.clock.now() - start <= (30 if fault == "hang" else 0) + 5  # one timeout


@pytest.mark.parametrize("fault", ["crash", "hang"])
@pytest.mark.parametrize(("shape", "make"), KINDS)
def test_without_retries_a_lost_middle_node_fails_the_artifact_naming_node_and_step(
    tmp_path: Path, shape: str, make: object, fault: str
) -> None:
    fed = _federation(tmp_path)
    middle = _middle(fed)
    start = fed.clock.now()
    fed.inject(fault, node=middle, task="step0", attempt=None)  # type: ignore[arg-type]
    t0 = time.monotonic()
    run = fed.run(_artifact(make(0, 30.0)))  # type: ignore[operator]
    assert run.status == "failed", run.status
    assert middle in run.reason and "step0" in run.reason, run.reason
    (failure, *_) = run.failures
    assert (failure.node_id, failure.alias) == (middle, "step0")
    assert failure.kind == ("timeout" if fault == "hang" else "crash"), failure
    assert "step1" not in {f.alias for f in run.failures}  # Finalize never ran on a gap
    assert time.monotonic() - t0 < 30
    assert fed.clock.now() - start <= (30 if fault == "hang" else 0) + 5
