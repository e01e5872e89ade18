"""The dashboard's parts without a browser: story parsing, the graph, the run folder
source (over a real simulator run), and the pages over it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from ui_helpers import SWARM

import shoal
from shoal._define.loader import load_swarm
from shoal._plan import load_plan
from shoal._ui.folder import RunFolders, write_instances, write_plan
from shoal._ui.graph import depths, svg
from shoal._ui.serve import FolderServer
from shoal._ui.source import instance_row


def test_an_instance_row_comes_from_its_id_and_story() -> None:
    story = [
        "t=10 #3 RunInstance: scheduled on node site-b (slot 1, attempt 2)",
        "t=10.5 #4 InstanceStarted: started",
        "t=12.75 #9 InstanceFailed: failed (error): RuntimeError: boom",
        "t=12.75 #9 InstanceFailed: failure is final: no retries left (retries=2)",
    ]
    row = instance_row("abc/4/worker/1/2", story)
    assert (row.alias, row.iteration, row.attempt, row.node_id) == ("worker", 4, 2, "site-b")
    assert row.state == "failed" and row.duration_s == pytest.approx(2.25)
    running = instance_row("abc/0/agg/0/0", story[:2], "running")
    assert running.state == "running" and running.duration_s is None


def _run(tmp: Path, name: str) -> Path:
    swarm, _ = load_swarm(f"{SWARM}:Watched")
    swarm.max_iterations = 3
    run = shoal.simulate(swarm, nodes=3, executor="inline", run_dir=tmp / name)
    folder = tmp / name
    write_plan(folder, run.plan)
    write_instances(folder, run.swarm_id, run.plan, run.iterations, run.story)
    (folder / "summary.json").write_text(json.dumps(run.summary()))
    with open(folder / "logs.jsonl", "w") as f:
        for r in run.logs():
            f.write(json.dumps(r.to_dict()) + "\n")
    stories = {x.instance_id: run.story(x.instance_id) for x in run.failures}
    (folder / "stories.json").write_text(json.dumps(stories))
    return folder


def test_the_graph_draws_every_task_and_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_UI_TEST_DELAY", "0")
    plan = load_plan((_run(tmp_path, "r") / "plan.json").read_text())
    assert depths(plan) == {"worker": 0, "aggregator": 1}
    drawn = str(svg(plan))
    assert drawn.count('class="task') == 2 and drawn.count('class="edge"') == 1
    assert "worker → aggregator" in drawn


def test_a_run_folder_reads_as_a_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_UI_TEST_DELAY", "0")
    src = RunFolders([_run(tmp_path, "r")])
    (info,) = src.swarms()
    assert (info.swarm_id, info.status, info.iteration) == ("r", "succeeded", 2)
    detail = src.swarm("r", 1)
    assert detail is not None and len(detail.iterations) == 3
    states = {(r.alias, r.node_id): r.state for r in detail.instances}
    assert states[("worker", "node-00001")] == "failed"  # the test swarm's failure
    assert detail.iterations[1].failed == 1
    (failure,) = detail.failures
    assert "the disk of this node is full" in failure.traceback
    assert src.story(failure.instance_id)
    assert [n.node_id for n in src.nodes()] == ["node-00000", "node-00001", "node-00002"]
    assert {r.node_id for r in src.logs("r", "node-00002", None, None, 100)} == {"node-00002"}
    assert {m.name for m in src.metrics("r")} == {"accuracy"}
    # Pages over it (shoal ui's server on loopback): the templates the coordinator serves.
    server = FolderServer([tmp_path / "r"])
    url = server.start()
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            r = client.post("login", data={"token": server.token})
            assert r.status_code == 303, r.text
            page = client.get("swarms/r?iteration=1").text
            assert "node-00001" in page and "RuntimeError" in page and "<svg" in page
    finally:
        server.stop()
    before = src.generation()
    (tmp_path / "r" / "live.json").write_text("{}")
    assert src.generation() != before  # a change the event stream announces


@pytest.mark.timeout(120)
def test_open_dashboards_share_one_render_each_with_its_own_csrf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue #20: 5 dashboards re-read the same page on the same change message; the
    # page is read and rendered once, and each session still gets its own CSRF token.
    import threading

    monkeypatch.setenv("SHOAL_UI_TEST_DELAY", "0")
    server = FolderServer([_run(tmp_path, "r")])
    src = server.source
    reads: list[str] = []
    real = src.swarm

    def counted(swarm_id: str, iteration: int | None = None) -> object:
        reads.append(swarm_id)
        return real(swarm_id, iteration)

    src.swarm = counted  # type: ignore[method-assign]
    renders: list[str] = []  # the swarm page draws its charts once per render
    from shoal._ui import charts

    real_per_node = charts.per_node

    def per_node(name: str, rows: list[Any]) -> list[charts.Chart]:
        renders.append(name)
        return real_per_node(name, rows)

    monkeypatch.setattr(charts, "per_node", per_node)
    url = server.start()
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(5)]
    try:
        for c in clients:
            assert c.post("login", data={"token": server.token}).status_code == 303
        pages: list[str] = [""] * len(clients)
        go = threading.Barrier(len(clients))

        def fetch(i: int) -> None:
            go.wait(10)
            pages[i] = clients[i].get("swarms/r").text

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert reads == ["r"], f"the swarm was read {len(reads)} times for 5 dashboards"
        assert renders == ["accuracy"], f"rendered {len(renders)} times for 5 dashboards"
        csrfs = [p.split('name="csrf" value="', 1)[1].split('"', 1)[0] for p in pages]
        assert len(set(csrfs)) == len(clients) and all(len(t) > 16 for t in csrfs)
        assert all("\x00" not in p for p in pages)
        # Apart from the token, the same page.
        assert len({p.replace(t, "") for p, t in zip(pages, csrfs, strict=True)}) == 1
        # A change of the source: the next read is fresh.
        (tmp_path / "r" / "live.json").write_text("{}")
        clients[0].get("swarms/r")
        assert len(reads) == 2
    finally:
        for c in clients:
            c.close()
        server.stop()


@pytest.mark.timeout(120)
def test_a_live_refetch_shares_the_render_since_the_last_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Live messages go out on a shared 1 s tick grid: a live refetch (dash.js's
    # X-Shoal-Live) takes the render made since the last tick although the source has
    # changed since; a plain request (a reload, a link) always gets the current state.
    import time

    from shoal._ui import charts
    from shoal._ui.pages import SSE_MIN_INTERVAL_S

    monkeypatch.setenv("SHOAL_UI_TEST_DELAY", "0")
    server = FolderServer([_run(tmp_path, "r")])
    renders: list[str] = []
    real_per_node = charts.per_node

    def per_node(name: str, rows: list[Any]) -> list[charts.Chart]:
        renders.append(name)
        return real_per_node(name, rows)

    monkeypatch.setattr(charts, "per_node", per_node)
    url = server.start()
    live = {"X-Shoal-Live": "1"}
    try:
        with (
            httpx.Client(base_url=url, timeout=30) as a,
            httpx.Client(base_url=url, timeout=30) as b,
        ):
            for c in (a, b):
                assert c.post("login", data={"token": server.token}).status_code == 303
            while time.monotonic() % SSE_MIN_INTERVAL_S > 0.2:  # just after a tick
                time.sleep(0.02)
            a.get("swarms/r", headers=live)
            (tmp_path / "r" / "live.json").write_text("{}")  # a change within the tick
            b.get("swarms/r", headers=live)
            assert len(renders) == 1, "a live refetch within the tick rendered again"
            b.get("swarms/r")  # not live: the current state
            assert len(renders) == 2
    finally:
        server.stop()
