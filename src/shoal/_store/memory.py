"""The in-memory store used by the simulator.

Values are kept as wire values (codec bytes inline, or a file the store owns), never as
decoded Python objects, so every reader decodes its own copy.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from shoal._runtime.wire import Wire


@dataclass(frozen=True)
class ResultRow:
    """One stored result."""

    swarm_id: str
    iteration: int
    alias: str
    node_id: str
    instance_id: str
    tag: str
    value: Wire


@dataclass(frozen=True)
class LogRow:
    """One log record."""

    swarm_id: str
    node_id: str
    alias: str
    iteration: int
    instance_id: str
    level: str
    message: str
    time: float


@dataclass(frozen=True)
class MetricRow:
    """One metric value."""

    swarm_id: str
    node_id: str
    alias: str
    iteration: int
    instance_id: str
    name: str
    value: float
    step: int
    time: float


@dataclass
class MemoryStore:
    """Globals (with per-iteration history), results, per-node state, logs, metrics.

    ``blob_dir`` holds the segment files large values are appended to (see
    ``shoal._runtime.wire``); results can be dropped an iteration at a time.
    """

    blob_dir: Path
    globals: dict[tuple[str, str], tuple[str, Wire]] = field(default_factory=dict)
    history: dict[tuple[str, str], list[tuple[int, Wire]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    state: dict[tuple[str, str, str, str], Wire] = field(default_factory=dict)
    logs: list[LogRow] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    _by_instance: dict[str, list[ResultRow]] = field(default_factory=lambda: defaultdict(list))
    _by_task: dict[tuple[str, int, str], list[ResultRow]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # Versions are unique across stores: a worker process caches globals by version and
    # may serve two runs (or two stores) that both have a "version 1" of a key.
    _store_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _writes: int = 0
    _dropped: set[tuple[str, int]] = field(default_factory=set)

    # ------------------------------------------------------------------- globals
    def global_get(self, swarm_id: str, key: str) -> tuple[str, Wire] | None:
        """Current version and value of a global."""
        return self.globals.get((swarm_id, key))

    def global_set(self, swarm_id: str, key: str, value: Wire, iteration: int) -> str:
        """Write a global; returns its new version (unique across stores)."""
        self._writes += 1
        version = f"{self._store_id}:{self._writes}"
        self.globals[(swarm_id, key)] = (version, value)
        hist = self.history[(swarm_id, key)]
        if hist and hist[-1][0] == iteration:
            hist[-1] = (iteration, value)  # keep the last write of each iteration
        else:
            hist.append((iteration, value))
        return version

    def global_keys(self, swarm_id: str) -> list[str]:
        """Every global key of a swarm, sorted."""
        return sorted(k for s, k in self.globals if s == swarm_id)

    # ------------------------------------------------------------------- results
    def global_versions(self, swarm_id: str) -> dict[str, str]:
        """``{key: version}`` of every global of a swarm."""
        return {k: v for (s, k), (v, _) in self.globals.items() if s == swarm_id}

    def result_add(self, row: ResultRow) -> None:
        """Store a result (ignored if its iteration's results were already dropped).

        A second result with the same tag from the same instance replaces the first.
        """
        if (row.swarm_id, row.iteration) in self._dropped:
            return
        # Idempotent per (instance, tag): a re-sent or re-run result replaces the old one.
        rows = self._by_instance[row.instance_id]
        old = next((r for r in rows if r.tag == row.tag), None)
        task_rows = self._by_task[(row.swarm_id, row.iteration, row.alias)]
        if old is not None:
            rows.remove(old)
            task_rows.remove(old)
        rows.append(row)
        task_rows.append(row)

    def drop_results(self, swarm_id: str, iteration: int) -> None:
        """Forget every result of an iteration and delete the segments holding them."""
        self._dropped.add((swarm_id, iteration))
        for key in [k for k in self._by_task if k[0] == swarm_id and k[1] == iteration]:
            for row in self._by_task.pop(key):
                self._by_instance.pop(row.instance_id, None)
        for seg in self.blob_dir.glob(f"*-r{iteration}.seg"):
            seg.unlink(missing_ok=True)

    def dropped(self, swarm_id: str, iteration: int) -> bool:
        """Whether an iteration's results were dropped."""
        return (swarm_id, iteration) in self._dropped

    def results_of_instances(self, instance_ids: list[str], tag: str) -> list[ResultRow]:
        """Results with ``tag`` of these instances, in the given order."""
        return [r for i in instance_ids for r in self._by_instance.get(i, ()) if r.tag == tag]

    def results_of_task(
        self, swarm_id: str, iteration: int, alias: str, tag: str
    ) -> list[ResultRow]:
        """Every result with ``tag`` of a task in an iteration, stragglers included."""
        rows = self._by_task.get((swarm_id, iteration, alias), [])
        return sorted((r for r in rows if r.tag == tag), key=lambda r: (r.node_id, r.instance_id))

    def result_tags(self, swarm_id: str, iteration: int, alias: str) -> list[str]:
        """The tags a task stored in an iteration, in first-stored order."""
        rows = self._by_task.get((swarm_id, iteration, alias), [])
        return list(dict.fromkeys(r.tag for r in rows))

    # --------------------------------------------------------------------- state
    def state_get(self, swarm_id: str, node_id: str, alias: str, key: str) -> Wire | None:
        """Per (node, swarm, alias) state."""
        return self.state.get((swarm_id, node_id, alias, key))

    def state_set(self, swarm_id: str, node_id: str, alias: str, key: str, value: Wire) -> None:
        """Persist per (node, swarm, alias) state."""
        self.state[(swarm_id, node_id, alias, key)] = value
