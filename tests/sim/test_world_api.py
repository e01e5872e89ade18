"""The world / local / logger API as task code sees it, through the real simulator."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import task_module

import shoal
from shoal import Condition, Module, Swarm, Task
from shoal.testing import Federation


def src(body: str, cls: str = "T") -> Module:
    """A source-text module whose Task.run() is ``body``."""
    return task_module(body, cls, imports="import numpy as np")


class Graph(Swarm):
    """A swarm built from (alias, module, options, upstream aliases) rows."""

    def __init__(
        self,
        rows: list[tuple[str, Module, dict[str, object], list[str]]],
        max_iterations: int | None = 1,
    ) -> None:
        self.max_iterations = max_iterations
        self._rows = rows
        self._tasks = {a: Task(m, alias=a, **o) for a, m, o, _ in rows}  # type: ignore[arg-type]

    def execute(self) -> list[Task]:
        ups = {a for _, _, _, u in self._rows for a in u}
        for alias, _, _, upstream in self._rows:
            self._tasks[alias]([self._tasks[u] for u in upstream])
        return [t for a, t in self._tasks.items() if a not in ups]


def test_select_collision_names_both_tasks_and_alias_or_select_all_resolve_it() -> None:
    a = src('self.world.results.add("v", "a")')
    b = src('self.world.results.add("v", "b")')
    reader = src(
        """
try:
    self.world.results.select("v")
except Exception as e:
    self.world.results.add("err", str(e))
self.world.results.add("by_alias", self.world.results.select("v", alias="b"))
self.world.results.add("all", sorted((r.alias, r.node_id, r.value)
                                     for r in self.world.results.select_all("v")))
"""
    )
    run = Federation(nodes=1).run(
        Graph([("a", a, {}, []), ("b", b, {}, []), ("r", reader, {}, ["a", "b"])])
    )
    assert run.ok, run.reason
    err = run.results.select("err")["node-00000"]
    assert "two results from node 'node-00000'" in err and "'a'" in err and "'b'" in err
    assert "alias=" in err and "select_all" in err
    assert run.results.select("by_alias")["node-00000"] == {"node-00000": "b"}
    assert run.results.select("all")["node-00000"] == [
        ("a", "node-00000", "a"),
        ("b", "node-00000", "b"),
    ]


def test_result_condition_starts_downstream_without_stragglers() -> None:
    worker = src('self.world.results.add("n", 1)')
    agg = src('self.world.results.add("seen", sorted(self.world.results.select("n")))')
    fed = Federation(nodes=10)
    for node in ("node-00003", "node-00007"):
        fed.inject("hang", node=node, task="w")
    run = fed.run(
        Graph(
            [
                ("w", worker, {"condition": Condition.RESULT, "min_results": 8}, []),
                ("agg", agg, {"method": "any"}, ["w"]),
            ]
        )
    )
    assert run.ok, run.reason
    seen = run.results.select("seen", alias="agg")
    (nodes,) = seen.values()
    assert len(nodes) == 8 and "node-00003" not in nodes and "node-00007" not in nodes


def test_schedule_next_iter_and_stop_swarm() -> None:
    worker = src('self.world.results.add("it", self.world.iteration)')
    sched = src(
        """
if self.world.iteration == 0:
    self.world.schedule_next_iter(["node-00001", "node-00002"], "w")
if self.world.iteration == 1:
    self.world.stop_swarm()
"""
    )
    run = Federation(nodes=4).run(
        Graph([("w", worker, {}, []), ("s", sched, {"method": "any"}, ["w"])], None)
    )
    assert run.ok and run.iterations == 2 and "stopped by task s on node" in run.reason
    assert len(run.results.select("it", alias="w", iteration=0)) == 4
    assert sorted(run.results.select("it", alias="w", iteration=1)) == ["node-00001", "node-00002"]


def test_datasets_in_every_format_and_a_missing_one(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(3))
    np.savez(tmp_path / "b.npz", X=np.ones((2, 2)), y=np.zeros(2))
    pd.DataFrame({"x": [1, 2]}).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame({"x": [1.5]}).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "folder").mkdir()
    reader = src(
        """
L = self.local
self.world.results.add("npy", L.get_dataset("a").tolist())
self.world.results.add("npz", sorted(L.get_dataset("b")))
self.world.results.add("csv", L.get_dataset("c")["x"].tolist())
self.world.results.add("parquet", L.get_dataset("d")["x"].tolist())
self.world.results.add("folder", str(L.get_dataset("e")))
self.world.results.add("path", str(L.get_dataset_path("a")))
L.get_dataset("nope")
"""
    )
    data = {
        "a": tmp_path / "a.npy",
        "b": tmp_path / "b.npz",
        "c": tmp_path / "c.csv",
        "d": tmp_path / "d.parquet",
        "e": tmp_path / "folder",
    }
    run = Federation(nodes=1, datasets=data).run(Graph([("r", reader, {}, [])]))
    assert not run.ok
    (failure,) = run.failures
    assert "has no dataset 'nope'" in failure.error and "a, b, c, d, e" in failure.error
    got = {
        k: v["node-00000"]
        for k in ("npy", "npz", "csv", "parquet", "folder", "path")
        for v in [run.results.select(k, iteration=0)]
    }
    assert got == {
        "npy": [0, 1, 2],
        "npz": ["X", "y"],
        "csv": [1, 2],
        "parquet": [1.5],
        "folder": str(tmp_path / "folder"),
        "path": str(tmp_path / "a.npy"),
    }


def test_state_is_kept_per_node_and_task_across_iterations() -> None:
    counter = src(
        """
n = self.local.get_state("n", 0) + 1
self.local.set_state("n", n)
self.world.results.add("n", n)
"""
    )
    run = Federation(nodes=2).run(
        Graph([("c1", counter, {}, []), ("c2", counter, {}, [])], max_iterations=3)
    )
    assert run.ok
    assert run.results.select("n", alias="c1") == {"node-00000": 3, "node-00001": 3}
    assert run.results.select("n", alias="c2", iteration=0) == {"node-00000": 1, "node-00001": 1}


def test_failure_carries_node_and_a_traceback_that_starts_in_user_code() -> None:
    boom = src(
        """
if self.world.node_id == "node-00002":
    raise ValueError("bad shard")
"""
    )
    run = shoal.simulate(
        Graph([("w", boom, {}, [])]),
        nodes=4,
        executor="processes",
        workers=2,
        raise_on_failure=False,
    )
    assert run.status == "failed"
    (f,) = run.failures
    assert f.node_id == "node-00002" and f.error == "ValueError: bad shard"
    assert 'raise ValueError("bad shard")' in f.traceback
    assert "shoal/_runtime" not in f.traceback


def test_unencodable_result_fails_with_the_type_named() -> None:
    bad = src('self.world.results.add("x", object())')
    run = Federation(nodes=1).run(Graph([("w", bad, {}, [])]))
    assert not run.ok and "object" in run.failures[0].error


def test_crashed_worker_process_is_retried_and_the_run_goes_on() -> None:
    crash = src(
        """
import os
if self.world.node_id == "node-00000" and self.local.get_state("tried") is None:
    self.local.set_state("tried", True)
    os._exit(3)
self.world.results.add("ok", True)
"""
    )
    run = shoal.simulate(Graph([("w", crash, {"retries": 1}, [])]), nodes=3, workers=2)
    assert run.ok, run.reason
    assert len(run.results.select("ok")) == 3


def test_a_worker_whose_channel_is_corrupted_is_replaced_and_the_instance_fails_clearly() -> None:
    # Task code runs inside the worker process and can reach its channel to the driver
    # (the fd is in argv): garbage there must fail that instance, not the simulation.
    corrupt = src(
        """
import os, sys
if self.world.node_id == "node-00000" and self.local.get_state("tried") is None:
    self.local.set_state("tried", True)
    os.write(int(sys.argv[1]), b"\\x00" * 7 + b"\\x03" + b"\\x93\\x01\\x02")
    import time
    time.sleep(600)
self.world.results.add("ok", True)
"""
    )
    run = shoal.simulate(Graph([("w", corrupt, {"retries": 1}, [])]), nodes=3, workers=2)
    assert run.ok, run.reason
    assert len(run.results.select("ok")) == 3
    once = shoal.simulate(
        Graph([("w", corrupt, {}, [])]), nodes=3, workers=2, raise_on_failure=False
    )
    assert not once.ok
    (failure,) = once.failures
    assert failure.kind == "crash"
    assert "malformed frame" in failure.error, failure.error


def test_timeout_kills_a_hanging_instance_within_bounds() -> None:
    sleeper = src("import time\ntime.sleep(600)")
    t0 = time.monotonic()
    run = shoal.simulate(
        Graph([("w", sleeper, {"timeout": 1.0}, [])]), nodes=2, workers=2, raise_on_failure=False
    )
    assert time.monotonic() - t0 < 30
    assert run.status == "failed"
    assert {f.kind for f in run.failures} == {"timeout"}


def test_an_instance_queued_behind_another_in_a_worker_is_timed_from_its_own_start() -> None:
    # One worker gets two instances at once (the second waits in its socket): the
    # second's 0.8 s timeout must not tick while the first runs for 0.5 s.
    sleeper = src("import time\ntime.sleep(0.5)\nself.world.results.add('ok', 1)")
    run = shoal.simulate(Graph([("w", sleeper, {"timeout": 0.8}, [])]), nodes=3, workers=1)
    assert run.ok, run.reason
    assert len(run.results.select("ok")) == 3


def test_a_global_written_mid_iteration_is_seen_by_every_instance_that_starts_later() -> None:
    # Workers are sent jobs ahead, each with the global versions of when it was sent,
    # and they cache globals: a job queued before the write but started after it must
    # still read the new value.
    rw = src(
        """
import time
if self.world.node_id == "node-00010":
    time.sleep(0.05)
    self.world.globals["g"] = 1
    self.world.results.add("set_at", time.monotonic())
else:
    start = time.monotonic()
    self.world.results.add("seen", [start, self.world.globals["g"]])
    time.sleep(0.1)
"""
    )

    class Rw(Graph):
        def __init__(self) -> None:
            super().__init__([("rw", rw, {}, [])])
            self.set_global("g", 0)

    run = shoal.simulate(Rw(), nodes=30, workers=2)
    assert run.ok, run.reason
    set_at = run.results.select("set_at")["node-00010"]
    seen = run.results.select("seen").values()
    # A job commits to its versions just before its code starts: 10 ms of slack for a
    # worker descheduled in between. Jobs take 0.1 s, so the one queued at the write
    # almost always starts later than that.
    later = [g for start, g in seen if start > set_at + 0.01]
    assert later, "no instance started after the write: the test proves nothing"
    assert later == [1] * len(later)


def test_values_kept_across_iterations_stay_intact_when_their_segments_are_reused() -> None:
    # Dropped iterations' segments are overwritten by later ones; a huge value (read as
    # a memory map, not a copy) must never be in one of those, or a view kept by task
    # code would change under it. One worker, so the keeper runs in one process.
    writer = src(
        """
it = self.world.iteration
self.world.results.add("big", np.full(4_200_000, it, dtype=np.float32))  # > 16 MiB
self.world.results.add("small", np.full(20_000, it, dtype=np.float32))
"""
    )
    keeper = src(
        """
import sys
kept = sys.modules.setdefault("kept_views", type(sys)("kept_views"))
it = self.world.iteration
if it == 1:
    kept.big = list(self.world.results.select("big").values())
    kept.small = list(self.world.results.select("small").values())
if it == 3:
    ok = all(float(v.min()) == float(v.max()) == 1.0 for v in kept.big + kept.small)
    self.world.globals["intact"] = ok
"""
    )
    swarm = Graph(
        [("w", writer, {}, []), ("k", keeper, {"method": "any", "maximum": 1}, ["w"])],
        max_iterations=4,
    )
    run = shoal.simulate(swarm, nodes=2, workers=1, keep_results=0)
    assert run.ok, run.reason
    assert run.globals["intact"] is True


def test_the_callers_gc_thresholds_are_restored() -> None:
    before = gc.get_threshold()
    run = shoal.simulate(Graph([("w", src("self.world.results.add('ok', 1)"), {}, [])]), nodes=1)
    assert run.ok, run.reason
    assert gc.get_threshold() == before


def test_large_values_cross_processes_intact() -> None:
    big = src('self.world.results.add("a", np.arange(1_000_000, dtype=np.float32))')
    total = src(
        """
s = sum(float(v.sum()) for _, v in self.world.results.stream("a"))
self.world.globals["total"] = s
"""
    )
    run = shoal.simulate(
        Graph([("w", big, {}, []), ("t", total, {"method": "any"}, ["w"])]), nodes=3, workers=2
    )
    assert run.ok, run.reason
    expected = 3 * float(np.arange(1_000_000, dtype=np.float32).sum())
    assert run.globals["total"] == pytest.approx(expected)
    assert run.results.select("a", alias="w")["node-00001"].shape == (1_000_000,)


def test_seeded_random_placement_is_reproducible() -> None:
    pick = src('self.world.results.add("me", 1)')

    def nodes(seed: int) -> list[str]:
        fed = Federation(nodes=20, seed=seed)
        run = fed.run(Graph([("p", pick, {"method": "random", "maximum": 0.25}, [])]))
        return sorted(run.results.select("me"))

    first = nodes(7)
    assert len(first) == 5 and nodes(7) == first
    assert any(nodes(s) != first for s in (1, 2, 3))


def test_old_results_are_dropped_with_a_clear_error_and_kept_on_request() -> None:
    probe = src(
        """
self.world.results.add("v", np.arange(20_000))  # large enough to live in a segment file
if self.world.iteration == 3:
    try:
        self.world.results.select("v", alias="w", iteration=0)
    except Exception as e:
        self.world.globals["error"] = str(e)
    self.world.globals["kept"] = len(self.world.results.select("v", alias="w", iteration=2))
"""
    )
    swarm = Graph([("w", probe, {}, [])], max_iterations=4)
    run = shoal.simulate(swarm, nodes=2, workers=2, keep_results=1)
    assert run.ok, run.reason
    assert (
        "iteration 0 were dropped" in run.globals["error"]
        and "keep_results" in run.globals["error"]
    )
    assert run.globals["kept"] == 2
    segments = sorted(p.name.rsplit("-", 1)[1] for p in (run.run_dir / "blobs").glob("*-r*.seg"))
    assert set(segments) == {"r2.seg", "r3.seg"}
    everything = shoal.simulate(
        Graph([("w", probe, {}, [])], max_iterations=4), nodes=2, workers=2, keep_results=None
    )
    assert len(everything.results.select("v", alias="w", iteration=0)) == 2
