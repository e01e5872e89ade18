"""The dashboard's source for simulator run folders (``.shoal/runs/<ts>/``).

``shoal simulate`` writes into its run folder: ``plan.json`` (the compiled plan),
``live.json`` while it runs with ``--ui`` (status, iteration, instance counts), and at
the end ``summary.json`` (status, globals, metrics, failures, timings), ``logs.jsonl``,
``stories.json`` (the failed instances' stories) and ``instances.json`` (every
instance's row: node, state, attempt, duration). This source reads only those files, so
a run can be opened live (``shoal simulate --ui``) or afterwards (``shoal ui RUN_DIR``);
each folder is one swarm, named by the folder.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from shoal._api.records import LogRecord, MetricRecord
from shoal._errors import ShoalError
from shoal._plan import Plan, load_plan
from shoal._ui.source import (
    FailureRow,
    InstanceRow,
    IterationRow,
    NodeInfo,
    SwarmDetail,
    SwarmInfo,
    instance_row,
)

#: The files a run folder may hold; a change to any of them is a change to show.
FILES = (
    "plan.json",
    "live.json",
    "summary.json",
    "logs.jsonl",
    "stories.json",
    "instances.json",
)
#: How often :meth:`RunFolders.changed` looks at the files (a folder sends no signal).
POLL_S = 0.5
#: Instance rows kept in instances.json; past it, the oldest iterations are left out.
MAX_INSTANCE_ROWS = 50_000


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not written yet, or being written: the next change shows it


def write_plan(run_dir: Path, plan: Plan) -> None:
    """Write ``plan.json`` (the dashboard draws the graph from it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _replace(run_dir / "plan.json", plan.to_json())


def write_live(run_dir: Path, doc: dict[str, Any]) -> None:
    """Write ``live.json`` (``status``, ``iteration``, ``done``, ``scheduled``) while a
    run goes on; replaced atomically, so a reader never sees half a file."""
    _replace(run_dir / "live.json", json.dumps(doc))


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_instances(
    run_dir: Path,
    swarm_id: str,
    plan: Plan,
    iterations: int,
    story: Callable[[str], list[str]],
) -> int:
    """Write ``instances.json``: one row per instance of the run, newest iterations
    first when there are more than :data:`MAX_INSTANCE_ROWS`; return the row count.

    ``story(instance_id)`` raises :class:`ShoalError` for an id the run never
    scheduled: ids are ``swarm/iteration/alias/slot/attempt``, so the rows are found by
    counting up slots and attempts until one is unknown.
    """

    def known(instance_id: str) -> list[str] | None:
        try:
            return story(instance_id)
        except ShoalError:
            return None

    rows: list[dict[str, Any]] = []
    for it in range(iterations - 1, -1, -1):
        for task in plan.tasks:
            slot = 0
            while (lines := known(f"{swarm_id}/{it}/{task.alias}/{slot}/0")) is not None:
                attempt = 0
                while lines is not None:
                    iid = f"{swarm_id}/{it}/{task.alias}/{slot}/{attempt}"
                    rows.append(asdict(instance_row(iid, lines)))
                    attempt += 1
                    lines = known(f"{swarm_id}/{it}/{task.alias}/{slot}/{attempt}")
                slot += 1
        if len(rows) >= MAX_INSTANCE_ROWS:
            break
    _replace(run_dir / "instances.json", json.dumps(rows))
    return len(rows)


def _renamed(instance_id: str, swarm_id: str) -> str:
    """An instance id with its folder's name for the swarm id: every simulator run calls
    its swarm ``sim``, so ids would clash across folders."""
    rest = instance_id.split("/", 1)[1] if "/" in instance_id else instance_id
    return f"{swarm_id}/{rest}"


class RunFolders:
    """Simulator run folders as a dashboard :class:`~shoal._ui.source.Source`.

    Parameters
    ----------
    folders
        One or more run folders; each is a swarm named by its folder's name.
    """

    kind = "simulator"
    can_stop = False

    def __init__(self, folders: list[Path]) -> None:
        self.closing = False  # set when the server stops: live streams end
        self.folders: dict[str, Path] = {}
        for folder in folders:
            name = folder.resolve().name
            while name in self.folders:
                name += "_"
            self.folders[name] = folder

    # ------------------------------------------------------------- changes
    def generation(self) -> int:
        """A hash of the files' sizes and modification times."""
        stamp = []
        for folder in self.folders.values():
            for name in FILES:
                try:
                    st = (folder / name).stat()
                except OSError:
                    continue
                stamp.append((str(folder), name, st.st_size, st.st_mtime_ns))
        return hash(tuple(stamp))

    async def changed(self, seen: int, timeout: float) -> int:
        """Look at the files every :data:`POLL_S` until they change or ``timeout`` ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = await asyncio.to_thread(self.generation)
            left = deadline - loop.time()
            if now != seen or left <= 0 or self.closing:
                return now
            await asyncio.sleep(min(POLL_S, left))

    # ------------------------------------------------------------- reading
    def _summary(self, swarm_id: str) -> dict[str, Any] | None:
        doc = _json(self.folders[swarm_id] / "summary.json")
        return doc if isinstance(doc, dict) else None

    def _plan(self, swarm_id: str) -> Plan | None:
        path = self.folders[swarm_id] / "plan.json"
        try:
            return load_plan(path.read_text(encoding="utf-8"))
        except (OSError, ShoalError):
            return None

    def _instances(self, swarm_id: str) -> list[InstanceRow]:
        rows = _json(self.folders[swarm_id] / "instances.json")
        if not isinstance(rows, list):
            return []
        out = []
        for r in rows:
            if isinstance(r, dict):
                row = InstanceRow(**r)
                out.append(replace(row, instance_id=_renamed(row.instance_id, swarm_id)))
        return out

    def _info(self, swarm_id: str) -> SwarmInfo:
        folder = self.folders[swarm_id]
        summary = self._summary(swarm_id)
        plan = self._plan(swarm_id)
        name = plan.name if plan is not None else swarm_id
        try:
            created: float | None = folder.stat().st_mtime
        except OSError:
            created = None
        if summary is not None:
            return SwarmInfo(
                swarm_id,
                str(summary.get("swarm", name)),
                str(summary.get("status", "")),
                int(summary.get("iterations", 0)) - 1,
                str(summary.get("reason", "")),
                created,
            )
        live = _json(folder / "live.json")
        if isinstance(live, dict):
            status = str(live.get("status", "running"))
            return SwarmInfo(swarm_id, name, status, int(live.get("iteration", 0)), "", created)
        return SwarmInfo(swarm_id, name, "unknown", -1, "no summary.json in the folder", created)

    def swarms(self) -> list[SwarmInfo]:
        """Every folder, newest first."""
        infos = [self._info(s) for s in self.folders]
        return sorted(infos, key=lambda s: -(s.created or 0.0))

    def _failures(self, swarm_id: str) -> list[FailureRow]:
        summary = self._summary(swarm_id) or {}
        out = []
        for f in summary.get("failures", []):
            iid = _renamed(str(f.get("instance", "")), swarm_id)
            attempt = int(iid.rsplit("/", 1)[-1]) if iid.rsplit("/", 1)[-1].isdigit() else 0
            out.append(
                FailureRow(
                    swarm_id,
                    iid,
                    str(f.get("task", "")),
                    str(f.get("node", "")),
                    int(f.get("iteration", 0)),
                    attempt,
                    str(f.get("kind", "")),
                    str(f.get("error", "")),
                    str(f.get("traceback", "")),
                )
            )
        return out

    def swarm(self, swarm_id: str, iteration: int | None = None) -> SwarmDetail | None:
        """One run folder."""
        if swarm_id not in self.folders:
            return None
        info = self._info(swarm_id)
        rows = self._instances(swarm_id)
        timeline: dict[int, list[InstanceRow]] = {}
        for r in rows:
            timeline.setdefault(r.iteration, []).append(r)
        live = _json(self.folders[swarm_id] / "live.json")
        if not rows and isinstance(live, dict) and info.iteration >= 0:
            # While a run goes on only its counts are known (live.json).
            done, scheduled = int(live.get("done", 0)), int(live.get("scheduled", 0))
            iterations = [IterationRow(i, 0, 0, 0, 0) for i in range(info.iteration)] + [
                IterationRow(info.iteration, scheduled, scheduled - done, done, 0, True)
            ]
        else:
            last = max(timeline, default=-1)
            iterations = [
                IterationRow(
                    it,
                    len(rs),
                    sum(r.state == "running" for r in rs),
                    sum(r.state == "succeeded" for r in rs),
                    sum(r.state == "failed" for r in rs),
                    it == last,
                )
                for it, rs in sorted(timeline.items())
            ]
        shown = info.iteration if iteration is None else iteration
        return SwarmDetail(
            info,
            self._plan(swarm_id),
            iterations,
            shown,
            sorted(timeline.get(shown, []), key=lambda r: (r.alias, r.node_id, r.attempt)),
            self._failures(swarm_id),
        )

    def failures(self, limit: int) -> list[FailureRow]:
        """The folders' failures, newest iteration first."""
        rows = [f for s in self.folders for f in self._failures(s)]
        rows.sort(key=lambda f: -f.iteration)
        return rows[:limit]

    def nodes(self) -> list[NodeInfo]:
        """The virtual nodes that ran something (a simulator's nodes are always there)."""
        count: dict[str, int] = {}
        for s in self.folders:
            for r in self._instances(s):
                count[r.node_id] = count.get(r.node_id, 0) + 1
            for m in self.metrics(s):
                count.setdefault(m.node_id, 0)
        return [
            NodeInfo(n, None, None, 0, {"kind": "virtual node", "instances run": str(c)})
            for n, c in sorted(count.items())
            if n
        ]

    def node_instances(self, node_id: str) -> list[InstanceRow]:
        """The node's instances in every folder, newest iteration first."""
        rows = [r for s in self.folders for r in self._instances(s) if r.node_id == node_id]
        return sorted(rows, key=lambda r: -r.iteration)[:200]

    def logs(
        self,
        swarm_id: str,
        node: str | None,
        task: str | None,
        level: str | None,
        limit: int,
    ) -> list[LogRecord]:
        """The folder's ``logs.jsonl``, filtered."""
        if swarm_id not in self.folders:
            return []
        out: list[LogRecord] = []
        try:
            with open(self.folders[swarm_id] / "logs.jsonl", encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = LogRecord(**json.loads(line))
                    except (ValueError, TypeError):
                        continue  # a line being written
                    if (node and rec.node_id != node) or (task and rec.alias != task):
                        continue
                    if level and rec.level != level:
                        continue
                    out.append(rec)
        except OSError:
            return []
        return out[-limit:]

    def metrics(self, swarm_id: str, name: str | None = None) -> list[MetricRecord]:
        """The metrics in the folder's ``summary.json``."""
        if swarm_id not in self.folders:
            return []
        out = []
        for m in (self._summary(swarm_id) or {}).get("metrics", []):
            if name is not None and m.get("name") != name:
                continue
            out.append(
                MetricRecord(
                    str(m["name"]),
                    float(m["value"]),
                    int(m.get("step", m.get("iteration", 0))),
                    str(m.get("node", "")),
                    str(m.get("task", "")),
                    int(m.get("iteration", 0)),
                    float(m.get("time", 0.0)),
                )
            )
        return out

    def story(self, instance_id: str) -> list[str] | None:
        """From ``stories.json`` (the failed instances' stories)."""
        swarm_id = instance_id.partition("/")[0]
        if swarm_id not in self.folders:
            return None
        stories = _json(self.folders[swarm_id] / "stories.json")
        for key, lines in (stories if isinstance(stories, dict) else {}).items():
            if _renamed(key, swarm_id) == instance_id:
                return [str(line) for line in lines]
        return None

    def stop(self, swarm_id: str) -> None:
        """Nothing: a run folder cannot be stopped from the page (:attr:`can_stop` is
        False, so no page offers it; Ctrl-C stops ``shoal simulate``)."""
