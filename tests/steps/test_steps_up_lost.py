"""A node agent killed (SIGKILL) while a ``Sequential`` chain is at it on ``shoal up``
(issue 17, Must show 2): without retries the artifact fails naming the node and the
step; with ``retries=1`` and ``--restart-nodes`` the slot runs again on the restarted
node and the artifact finishes with the right answer. ``shoal status --watch
--timeout`` returns in both cases: never a hang."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import poll_for
from test_steps_up import up  # noqa: F401  (the fixture)

import shoal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ARTIFACT = """
import updown_ops
from shoal.steps import Artifact, Collect, Finalize, Sequential

MARK = {mark!r}


def chain(retries, mark):
    return Artifact(
        steps=[
            Sequential(
                updown_ops.Tally(name="chain", pause=4.0, mark=mark), Collect(), retries=retries
            ),
            Finalize(updown_ops.Tallies(names=("chain",))),
        ],
        dataset="t",
        initiator="node-00000",
        name=f"lost{{retries}}",
    )


failing = chain(0, MARK + "/failing")
retried = chain(1, MARK + "/retried")
"""


def _kill_the_middle_node(fed: Any, mark: Path) -> str:
    """Wait until the chain's second node says it started, then SIGKILL its agent and
    everything the agent started (the task process too). Returns the node's id."""
    poll_for(lambda: len(list(mark.iterdir())) >= 2, 60, "the chain's second node to start")
    middle = max(mark.iterdir(), key=lambda p: float(p.read_text() or 0)).name
    (agent,) = [pid for pid, cmd in fed.processes() if f"{middle}/node.toml" in cmd]
    victims = [agent, *_descendants(agent)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return middle


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def test_a_node_agent_killed_mid_chain_fails_or_retries_the_artifact_never_hangs(
    up: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x": rng.normal(size=60), "target": rng.integers(0, 2, 60)})
    csv = tmp_path / "t.csv"
    table.to_csv(csv, index=False)
    mark = tmp_path / "mark"
    for name in ("failing", "retried"):
        (mark / name).mkdir(parents=True)
    file = tmp_path / "lost.py"
    file.write_text(ARTIFACT.format(mark=str(mark)))
    shutil.copyfile(Path(__file__).with_name("updown_ops.py"), tmp_path / "updown_ops.py")
    fed = up(
        *("--nodes", "3", "--dataset", f"t={csv}", "--partition", "iid"),
        *("--executor", "process", "--restart-nodes"),  # marks on the host; agents restarted
    )
    fed.wait_ready()

    # Without retries: the lost slot fails the artifact, naming the node and the step.
    deployed = fed.shoal("deploy", f"{file}:failing")
    assert deployed.returncode == 0, deployed.stderr + fed.diagnostics()
    swarm_id = deployed.stdout.strip()
    middle = _kill_the_middle_node(fed, mark / "failing")
    t0 = time.monotonic()
    watched = fed.shoal("status", swarm_id, "--watch", "--timeout", "90", timeout=120)
    waited = time.monotonic() - t0
    out = watched.stdout + watched.stderr
    assert watched.returncode != 0, out + fed.diagnostics()
    assert "failed" in out and middle in out and "step0" in out, out + fed.diagnostics()
    print(f"failing: {middle} killed; status --watch returned in {waited:.1f}s: {out.strip()}")
    with shoal.Client(fed.url, fed.token) as client:
        assert not client.result_records(swarm_id, "products", alias="step1")  # no Finalize

    # With retries=1: the slot runs again on the restarted node; the right answer.
    with shoal.Client(fed.url, fed.token) as client:  # the killed agent is back
        poll_for(lambda: all(n.connected for n in client.nodes()), 60, "every node back")
    deployed = fed.shoal("deploy", f"{file}:retried")
    assert deployed.returncode == 0, deployed.stderr + fed.diagnostics()
    swarm_id = deployed.stdout.strip()
    middle = _kill_the_middle_node(fed, mark / "retried")
    t0 = time.monotonic()
    watched = fed.shoal("status", swarm_id, "--watch", "--timeout", "90", timeout=120)
    waited = time.monotonic() - t0
    assert watched.returncode == 0, watched.stdout + watched.stderr + fed.diagnostics()
    print(f"retried: {middle} killed; status --watch returned in {waited:.1f}s")
    with shoal.Client(fed.url, fed.token) as client:
        (final,) = client.results(swarm_id, "products", alias="step1").values()
        failures = client.status(swarm_id).failures
    (tally,) = final["chain"]
    assert sorted(tally) == ["node-00000", "node-00001", "node-00002"], tally
    assert sum(v[0] for v in tally.values()) == len(table)
    assert sum(v[1] for v in tally.values()) == int(table.target.sum())
    assert [(f.node_id, f.alias) for f in failures] == [(middle, "step0")], failures
