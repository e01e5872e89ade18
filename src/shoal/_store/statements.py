"""The SQL store's statements on the round path, built once per dialect.

Every instance of a real deployment appends engine events, reads a global and stores
a result; a statement built per call costs SQLAlchemy more than SQLite's own work
(constructing the expression and its cache key: about 0.1 ms a statement, measured
with ``bench/deploy_overhead.py``). Built once, with bound parameters, a statement's
compiled form is found by a cache key computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from shoal._store import schema as t

_b = sa.bindparam
#: A stored value this short may be a reference to a value file (shoal._store.spill).
_REF_MAX = 256


def dialect_insert(pg: bool, table: sa.Table) -> Any:
    """An INSERT into ``table`` that can take ON CONFLICT (PostgreSQL's or SQLite's)."""
    return (postgresql.insert if pg else sqlite.insert)(table)


@dataclass(frozen=True)
class Statements:
    """The prebuilt statements of one dialect (see :func:`statements`)."""

    # Appends an event as the next number (under the events lock on PostgreSQL).
    event_append: Any
    global_get: Any
    global_versions: Any
    result_dropped: Any
    result_upsert: Any
    result_ref: Any
    claim_held: Any
    claim_insert: Any
    value_bytes: Any
    value_bytes_add: Any


@cache
def statements(pg: bool) -> Statements:
    """The statements for PostgreSQL (``pg``) or SQLite."""
    e, g, d, r, c, v = t.events, t.globals_, t.dropped, t.results, t.blob_claims, t.swarm_values
    next_seq = sa.select(
        sa.func.coalesce(sa.func.max(e.c.seq), 0) + 1, _b("payload", type_=sa.LargeBinary)
    )
    upsert = dialect_insert(pg, r)
    keys = {"instance_id", "tag"}
    replaced = [col.name for col in r.c if col.name not in keys | {"id"}]
    claim = dialect_insert(pg, c).on_conflict_do_nothing(
        index_elements=["digest", "swarm_id", "kind"]
    )
    add = dialect_insert(pg, v)
    return Statements(
        event_append=sa.insert(e).from_select(["seq", "payload"], next_seq).returning(e.c.seq),
        global_get=sa.select(g.c.version, g.c.value).where(
            g.c.swarm_id == _b("swarm_id"), g.c.key == _b("key")
        ),
        global_versions=sa.select(g.c.key, g.c.version).where(g.c.swarm_id == _b("swarm_id")),
        result_dropped=sa.select(d.c.iteration).where(
            d.c.swarm_id == _b("swarm_id"), d.c.iteration == _b("iteration")
        ),
        result_upsert=upsert.on_conflict_do_update(
            index_elements=sorted(keys),
            set_={name: upsert.excluded[name] for name in replaced},
        ),
        # A stored value that may name a file (shoal._store.spill): a short one only,
        # so a large inline value is not read for nothing (length() reads no content).
        result_ref=sa.select(
            sa.case((sa.func.length(r.c.value) < _REF_MAX, r.c.value), else_=sa.null())
        ).where(r.c.instance_id == _b("instance_id"), r.c.tag == _b("tag")),
        claim_held=sa.select(c.c.length).where(
            c.c.digest == _b("digest"), c.c.swarm_id == _b("swarm_id"), c.c.kind == _b("kind")
        ),
        claim_insert=claim.returning(c.c.length),
        value_bytes=sa.select(v.c.bytes).where(v.c.swarm_id == _b("swarm_id")),
        value_bytes_add=add.on_conflict_do_update(
            index_elements=["swarm_id"], set_={"bytes": v.c.bytes + add.excluded.bytes}
        ),
    )
