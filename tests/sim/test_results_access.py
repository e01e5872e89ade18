"""Least privilege for results (issue #14, point 3): a task reads only the results of
the tasks it is downstream of (transitively), in its own or an earlier iteration, and
its own task's results of earlier iterations. The owner reads everything.

Run through ``shoal.testing.Federation``: the same world service answers the
coordinator (tests/coord/test_least_privilege.py shows it over real processes)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import task_module

from shoal import Module, Swarm, Task
from shoal.testing import Federation

pytestmark = [pytest.mark.timeout(120)]

# Each probe reads results with (alias, iteration offset from the current iteration)
# and records "allowed: <nodes>" or "denied: <code>: <message>".
PROBE = """
found = {}
for name, alias, back in PROBES:
    it = None if back is None else self.world.iteration - back
    try:
        got = self.world.results.select("v", alias=alias, iteration=it)
        found[name] = "allowed: " + ",".join(sorted(got))
    except Exception as e:
        found[name] = f"denied: {getattr(e, 'code', '?')}: {e}"
self.world.results.add("v", self.world.iteration)
self.world.results.add("found", found)
"""


def probe(cls: str, probes: list[tuple[str, str | None, int | None]]) -> Module:
    """A module that tries each ``(name, alias, iterations back)`` read."""
    return task_module(f"PROBES = {probes!r}\n" + PROBE, cls)


class Diamond(Swarm):
    """``w`` -> ``agg`` -> ``sched`` and a separate branch ``side``; two iterations."""

    def __init__(self) -> None:
        self.max_iterations = 2
        self.w = Task(
            probe(
                "W",
                [
                    ("downstream", "agg", None),  # a task it feeds
                    ("sibling", "w", None),  # its own task, this iteration
                    ("own_earlier", "w", 1),  # its own task, the iteration before
                    ("downstream_earlier", "agg", 1),  # still downstream
                ],
            ),
            alias="w",
        )
        self.side = Task(probe("Side", []), alias="side", method="any")
        self.agg = Task(
            probe("Agg", [("direct", "w", None), ("next_iteration", "w", -1)]),
            alias="agg",
            method="any",
        )
        self.sched = Task(
            probe(
                "Sched",
                [
                    ("transitive", "w", None),
                    ("transitive_earlier", "w", 1),
                    ("other_branch", "side", None),
                    ("unknown_task", "nope", None),
                ],
            ),
            alias="sched",
            method="any",
        )

    def execute(self) -> list[Task]:
        return [self.sched(self.agg(self.w())), self.side()]


def _found(run: Any, alias: str, iteration: int) -> dict[str, str]:
    found = run.results.select("found", alias=alias, iteration=iteration)
    first = found[min(found)]
    assert isinstance(first, dict)
    return first


def test_a_task_reads_only_its_upstream_results() -> None:
    run = Federation(nodes=2).run(Diamond())
    assert run.ok, run.reason
    last = run.iterations - 1
    w = _found(run, "w", last)
    assert w["own_earlier"] == "allowed: node-00000,node-00001", w
    for name in ("downstream", "sibling", "downstream_earlier"):
        assert w[name].startswith("denied: world.results_forbidden: "), (name, w[name])
    assert "task 'w' (iteration 1) may not read the results of task 'agg'" in w["downstream"]
    assert "downstream of" in w["downstream"] and "execute()" in w["downstream"]
    assert (
        "task 'w' (iteration 1) may not read the results of task 'w' in iteration 1"
        in (w["sibling"])
    )

    agg = _found(run, "agg", last)
    assert agg["direct"] == "allowed: node-00000,node-00001", agg
    assert agg["next_iteration"].startswith("denied: world.results_forbidden: "), agg

    sched = _found(run, "sched", last)
    assert sched["transitive"] == "allowed: node-00000,node-00001", sched
    assert sched["transitive_earlier"] == "allowed: node-00000,node-00001", sched
    side = sched["other_branch"]
    assert side.startswith("denied: world.results_forbidden: "), side
    assert "task 'sched' (iteration 1) may not read the results of task 'side'" in side
    assert "(here: 'agg', 'w')" in side
    assert sched["unknown_task"].startswith("denied: world.results_forbidden: "), sched

    # The owner reads everything.
    assert sorted(run.results.select("v", alias="side", iteration=last)) != []
    assert sorted(run.results.select("v", alias="w", iteration=0)) == ["node-00000", "node-00001"]
