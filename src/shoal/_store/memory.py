"""The in-memory store: the simulator's store, and the reference for the contract.

Values are kept as wire values (codec bytes inline, or a file the store owns), never as
decoded Python objects, so every reader decodes its own copy. Every method is safe to
call from several threads.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from shoal._errors import ShoalError
from shoal._store.base import (
    JoinTokenRecord,
    LogRow,
    MetricRow,
    NodeRecord,
    ResultRow,
    SwarmRecord,
    check_blob_kind,
    swarm_exists,
    swarm_missing,
)
from shoal._wire import Wire, free_segments, retire_bucket

__all__ = ["LogRow", "MemoryStore", "MetricRow", "ResultRow"]


class MemoryStore:
    """A :class:`~shoal._store.base.Store` that keeps everything in this process.

    Parameters
    ----------
    blob_dir
        The simulator's folder of segment files (``{prefix}-r{iteration}.seg``, see
        ``shoal._wire``) holding large result values. When given,
        :meth:`drop_results` also retires the segments of the dropped iteration (for
        reuse by the next writers, see ``shoal._wire.retire_bucket``).
    """

    def __init__(self, blob_dir: Path | None = None) -> None:
        self.blob_dir = blob_dir
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeRecord] = {}
        self._join_tokens: dict[str, JoinTokenRecord] = {}
        self._swarms: dict[str, SwarmRecord] = {}
        self._events: list[bytes] = []
        self._globals: dict[str, dict[str, tuple[str, Wire]]] = defaultdict(dict)
        self._history: dict[tuple[str, str], dict[int, Wire]] = defaultdict(dict)
        self._state: dict[tuple[str, str, str, str], Wire] = {}
        self._logs: list[LogRow] = []
        self._metrics: list[MetricRow] = []
        self._log_ordinals: set[tuple[str, int]] = set()
        self._metric_ordinals: set[tuple[str, int]] = set()
        self._by_instance: dict[str, list[ResultRow]] = defaultdict(list)
        self._by_task: dict[tuple[str, int, str], list[ResultRow]] = defaultdict(list)
        self._dropped: set[tuple[str, int]] = set()
        self._claims: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._value_bytes: dict[str, int] = defaultdict(int)  # swarm -> its values' bytes
        self._grants: dict[tuple[str, str], set[str]] = defaultdict(set)
        # Versions are unique across stores: a worker process caches globals by version
        # and may serve two runs (or two stores) that both have a "version 1" of a key.
        self._store_id = uuid.uuid4().hex
        self._writes = 0
        self._deleters: list[threading.Thread] = []

    def close(self) -> None:
        """Nothing to release (present for symmetry with the SQL store)."""

    # --------------------------------------------------------------------- nodes
    def node_upsert(self, node: NodeRecord) -> None:
        """Create or replace a node."""
        with self._lock:
            self._nodes[node.node_id] = node

    def node_get(self, node_id: str) -> NodeRecord | None:
        """A node, or None."""
        with self._lock:
            return self._nodes.get(node_id)

    def nodes(self) -> list[NodeRecord]:
        """Every node, sorted by id."""
        with self._lock:
            return [self._nodes[k] for k in sorted(self._nodes)]

    # --------------------------------------------------------------- join tokens
    def join_token_put(self, token: JoinTokenRecord) -> None:
        """Create or replace a join token (by ``token_id``)."""
        with self._lock:
            for other in self._join_tokens.values():
                if other.token_hash == token.token_hash and other.token_id != token.token_id:
                    raise ShoalError(
                        f"join token {other.token_id!r} has the same secret",
                        code="store.exists",
                        hint="make a new secret for the token",
                    )
            self._join_tokens[token.token_id] = token

    def join_token_get(self, token_id: str) -> JoinTokenRecord | None:
        """A join token by id, or None."""
        with self._lock:
            return self._join_tokens.get(token_id)

    def join_token_find(self, token_hash: str) -> JoinTokenRecord | None:
        """The join token whose secret hashes to ``token_hash``, or None."""
        with self._lock:
            return next((t for t in self._join_tokens.values() if t.token_hash == token_hash), None)

    def join_tokens(self) -> list[JoinTokenRecord]:
        """Every join token, oldest first (ties: by id)."""
        with self._lock:
            return sorted(self._join_tokens.values(), key=lambda t: (t.created, t.token_id))

    def join_token_use(self, token_id: str, now: float) -> bool:
        """Count one use of a token if it is usable at ``now``; False otherwise."""
        with self._lock:
            token = self._join_tokens.get(token_id)
            if token is None or token.state(now) != "active":
                return False
            self._join_tokens[token_id] = dataclasses.replace(token, uses=token.uses + 1)
            return True

    def join_token_revoke(self, token_id: str, now: float) -> bool:
        """Revoke a token; False if no token has this id."""
        with self._lock:
            token = self._join_tokens.get(token_id)
            if token is None:
                return False
            if token.revoked is None:
                self._join_tokens[token_id] = dataclasses.replace(token, revoked=now)
            return True

    # -------------------------------------------------------------------- swarms
    def swarm_create(self, swarm: SwarmRecord) -> None:
        """Record a new swarm (an existing id raises ``ShoalError`` ``store.exists``)."""
        with self._lock:
            if swarm.swarm_id in self._swarms:
                raise swarm_exists(swarm.swarm_id)
            self._swarms[swarm.swarm_id] = swarm

    def swarm_update(self, swarm_id: str, status: str, reason: str, iteration: int) -> None:
        """Update a swarm's status, reason and current iteration.

        Raises
        ------
        ShoalError
            ``store.missing`` if no swarm has this id.
        """
        with self._lock:
            old = self._swarms.get(swarm_id)
            if old is None:
                raise swarm_missing(swarm_id)
            self._swarms[swarm_id] = dataclasses.replace(
                old, status=status, reason=reason, iteration=iteration
            )

    def swarm_get(self, swarm_id: str) -> SwarmRecord | None:
        """A swarm, or None."""
        with self._lock:
            return self._swarms.get(swarm_id)

    def swarms(self) -> list[SwarmRecord]:
        """Every swarm, newest first (ties: greater id first)."""
        with self._lock:
            rows = list(self._swarms.values())
        return sorted(rows, key=lambda s: (s.created, s.swarm_id), reverse=True)

    # ----------------------------------------------------------------- event log
    def event_append(self, *payloads: bytes) -> int:
        """Append encoded engine events, in order; returns the last one's sequence
        number (1, 2, ...)."""
        if not payloads:
            raise ValueError("no events to append")
        with self._lock:
            self._events.extend(bytes(p) for p in payloads)
            return len(self._events)

    def events(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """Events with a sequence number greater than ``after``, in order."""
        start = max(after, 0)
        with self._lock:
            tail = self._events[start:]
        return iter([(start + i + 1, p) for i, p in enumerate(tail)])

    # ------------------------------------------------------------------- globals
    def global_get(self, swarm_id: str, key: str) -> tuple[str, Wire] | None:
        """Current version and value of a global."""
        with self._lock:
            found = self._globals.get(swarm_id)
            return None if found is None else found.get(key)

    def global_set(self, swarm_id: str, key: str, value: Wire, iteration: int) -> str:
        """Write a global; returns its new version (unique across stores).

        The history keeps the last value written in each iteration.
        """
        with self._lock:
            self._writes += 1
            version = f"{self._store_id}:{self._writes}"
            self._globals[swarm_id][key] = (version, value)
            self._history[(swarm_id, key)][iteration] = value
            return version

    def global_keys(self, swarm_id: str) -> list[str]:
        """Every global key of a swarm, sorted."""
        with self._lock:
            return sorted(self._globals.get(swarm_id, {}))

    def global_versions(self, swarm_id: str) -> dict[str, str]:
        """``{key: version}`` of every global of a swarm."""
        with self._lock:
            return {k: v for k, (v, _) in self._globals.get(swarm_id, {}).items()}

    def global_history(self, swarm_id: str, key: str) -> list[tuple[int, Wire]]:
        """``[(iteration, value)]`` in iteration order (-1: the initial value)."""
        with self._lock:
            hist = self._history.get((swarm_id, key), {})
            return sorted(hist.items(), key=lambda kv: kv[0])

    # ------------------------------------------------------------------- results
    def result_add(self, row: ResultRow) -> None:
        """Store a result (ignored if its iteration's results were already dropped).

        A second result with the same tag from the same instance replaces the first in
        place, so a repeated call leaves the store as it was.
        """
        with self._lock:
            if (row.swarm_id, row.iteration) in self._dropped:
                return
            rows = self._by_instance[row.instance_id]
            task_key = (row.swarm_id, row.iteration, row.alias)
            task_rows = self._by_task[task_key]
            old = next((r for r in rows if r.tag == row.tag), None)
            if old is None:
                rows.append(row)
                task_rows.append(row)
                return
            rows[_index(rows, old)] = row
            old_key = (old.swarm_id, old.iteration, old.alias)
            if old_key == task_key:
                task_rows[_index(task_rows, old)] = row
            else:  # the same instance id reported under another task: move it
                old_rows = self._by_task[old_key]
                del old_rows[_index(old_rows, old)]
                task_rows.append(row)

    def drop_results(self, swarm_id: str, iteration: int) -> None:
        """Forget every result of an iteration (and retire the segments holding them)."""
        with self._lock:
            self._dropped.add((swarm_id, iteration))
            for key in [k for k in self._by_task if k[0] == swarm_id and k[1] == iteration]:
                for row in self._by_task.pop(key):
                    rows = self._by_instance.get(row.instance_id)
                    if rows is not None:
                        rows[:] = [r for r in rows if r is not row]
                        if not rows:
                            del self._by_instance[row.instance_id]
        if self.blob_dir is not None:
            self._delete(retire_bucket(self.blob_dir, f"r{iteration}"))

    def _delete(self, doomed: list[Path]) -> None:
        # Unlinking a segment frees its page-cache pages and may wait for their
        # writeback: ~0.4 s for a 2 GB segment here, which would stall the simulator's
        # driver at each iteration start. A short-lived thread does it.
        if not doomed:
            return
        deleter = threading.Thread(
            target=_unlink_all, args=(doomed,), name="shoal-drop-segments", daemon=True
        )
        deleter.start()
        with self._lock:
            self._deleters = [t for t in self._deleters if t.is_alive()] + [deleter]

    def settle(self) -> None:
        """Delete the retired segments nobody reused, and wait until the segments of
        every dropped iteration are deleted."""
        if self.blob_dir is not None:
            self._delete(free_segments(self.blob_dir))
        with self._lock:
            deleters, self._deleters = self._deleters, []
        for t in deleters:
            t.join()

    def dropped(self, swarm_id: str, iteration: int) -> bool:
        """Whether an iteration's results were dropped."""
        with self._lock:
            return (swarm_id, iteration) in self._dropped

    def results_of_instances(self, instance_ids: list[str], tag: str) -> list[ResultRow]:
        """Results with ``tag`` of these instances, in the given order."""
        with self._lock:
            return [r for i in instance_ids for r in self._by_instance.get(i, ()) if r.tag == tag]

    def results_of_task(
        self, swarm_id: str, iteration: int, alias: str, tag: str
    ) -> list[ResultRow]:
        """Every result with ``tag`` of a task in an iteration, sorted by node id."""
        with self._lock:
            rows = [r for r in self._by_task.get((swarm_id, iteration, alias), ()) if r.tag == tag]
        return sorted(rows, key=lambda r: (r.node_id, r.instance_id))

    def result_tags(self, swarm_id: str, iteration: int, alias: str) -> list[str]:
        """The tags a task stored in an iteration, in first-stored order."""
        with self._lock:
            rows = self._by_task.get((swarm_id, iteration, alias), ())
            return list(dict.fromkeys(r.tag for r in rows))

    # --------------------------------------------------------------------- state
    def state_get(self, swarm_id: str, node_id: str, alias: str, key: str) -> Wire | None:
        """Per (swarm, node, alias) state."""
        with self._lock:
            return self._state.get((swarm_id, node_id, alias, key))

    def state_set(self, swarm_id: str, node_id: str, alias: str, key: str, value: Wire) -> None:
        """Persist per (swarm, node, alias) state."""
        with self._lock:
            self._state[(swarm_id, node_id, alias, key)] = value

    # --------------------------------------------------------------------- blobs
    def blob_claim(self, digest: str, swarm_id: str, kind: str, length: int = 0) -> None:
        """Record that a blob belongs to a swarm as a ``"bundle"`` or a ``"value"``."""
        check_blob_kind(kind)
        with self._lock:
            self._claim(digest, swarm_id, kind, length)

    def _claim(self, digest: str, swarm_id: str, kind: str, length: int) -> None:
        if (swarm_id, kind) in self._claims[digest]:
            return  # a repeat keeps the first length
        self._claims[digest].add((swarm_id, kind))
        if kind == "value":
            self._value_bytes[swarm_id] += length

    def swarm_blob_bytes(self, swarm_id: str) -> int:
        """The bytes of the distinct value blobs claimed by a swarm."""
        with self._lock:
            return self._value_bytes.get(swarm_id, 0)

    def value_claim(self, digest: str, swarm_id: str, length: int, quota: int | None) -> int | None:
        """Claim a value blob for a swarm within its quota (see :class:`Store`)."""
        with self._lock:
            if (swarm_id, "value") in self._claims.get(digest, ()):
                return None
            used = self._value_bytes.get(swarm_id, 0) + length
            if quota is not None and used > quota:
                return used
            self._claim(digest, swarm_id, "value", length)
            return None

    def blob_claims(self, digest: str) -> list[tuple[str, str]]:
        """``[(swarm_id, kind)]`` of a blob, sorted."""
        with self._lock:
            return sorted(self._claims.get(digest, ()))

    def blob_grant(self, digest: str, holder: str, swarm_id: str = "") -> None:
        """Record that ``holder`` has the blob (given under ``swarm_id``, or uploaded)."""
        with self._lock:
            self._grants[(digest, holder)].add(swarm_id)

    def blob_granted(self, digest: str, holder: str) -> list[str]:
        """The swarm ids under which ``holder`` has the blob, sorted."""
        with self._lock:
            return sorted(self._grants.get((digest, holder), ()))

    # ------------------------------------------------------------ logs, metrics
    def log_add(self, row: LogRow) -> None:
        """Append a log record (its ``seq`` is assigned here: 1, 2, ...); ignored if the
        instance's ``ordinal`` is stored."""
        with self._lock:
            if self._seen(self._log_ordinals, row.instance_id, row.ordinal):
                return
            self._logs.append(dataclasses.replace(row, seq=len(self._logs) + 1))

    @staticmethod
    def _seen(ordinals: set[tuple[str, int]], instance_id: str, ordinal: int | None) -> bool:
        """Whether (instance, ordinal) was stored; remember it if not."""
        if ordinal is None:
            return False
        key = (instance_id, ordinal)
        if key in ordinals:
            return True
        ordinals.add(key)
        return False

    def logs(
        self,
        swarm_id: str,
        node: str | None = None,
        task: str | None = None,
        level: str | None = None,
        iteration: int | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[LogRow]:
        """Log records with ``seq > after``, filtered, in order (at most ``limit``)."""
        with self._lock:
            tail = self._logs[max(after, 0) :]  # seq n is at index n - 1
        out = [
            r
            for r in tail
            if r.swarm_id == swarm_id
            and (node is None or r.node_id == node)
            and (task is None or r.alias == task)
            and (level is None or r.level == level)
            and (iteration is None or r.iteration == iteration)
        ]
        return out if limit is None else out[: max(limit, 0)]

    def metric_add(self, row: MetricRow) -> None:
        """Append a metric value; ignored if the instance's ``ordinal`` is stored."""
        with self._lock:
            if not self._seen(self._metric_ordinals, row.instance_id, row.ordinal):
                self._metrics.append(row)

    def metrics(
        self,
        swarm_id: str,
        name: str | None = None,
        node: str | None = None,
        task: str | None = None,
    ) -> list[MetricRow]:
        """Metric values, filtered, in the order they were added."""
        with self._lock:
            rows = list(self._metrics)
        return [
            r
            for r in rows
            if r.swarm_id == swarm_id
            and (name is None or r.name == name)
            and (node is None or r.node_id == node)
            and (task is None or r.alias == task)
        ]


def _index(rows: list[ResultRow], row: ResultRow) -> int:
    """Position of ``row`` itself (not of an equal row) in ``rows``."""
    return next(i for i, r in enumerate(rows) if r is row)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
