"""The SQL store's tables (SQLAlchemy Core), as the migrations leave them at head.

The migrations (``shoal/_store/migrations/versions``) create and change the tables;
this metadata is what :class:`~shoal._store.sql.SQLStore` queries, and a test checks
that the two agree. Change both together: add a migration, then edit this file.
"""

from __future__ import annotations

import sqlalchemy as sa

#: The table alembic records the schema revision in (named so that it cannot clash
#: with an application's own alembic history in a shared database).
VERSION_TABLE = "shoal_alembic_version"

# An integer key that autoincrements everywhere: SQLite only does so for a column
# declared exactly INTEGER PRIMARY KEY (an alias of its rowid).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

nodes = sa.Table(
    "shoal_nodes",
    metadata,
    sa.Column("node_id", sa.String(), primary_key=True),
    sa.Column("credential_hash", sa.String(), nullable=False),
    sa.Column("datasets", sa.JSON(), nullable=False),
    sa.Column("gpu", sa.Boolean(), nullable=False),
    sa.Column("images", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("last_seen", sa.Double(), nullable=False),
    sa.Column("connected", sa.Boolean(), nullable=False),
    sa.Column("info", sa.JSON(), nullable=False),
    sa.Column("revoked", sa.Double(), nullable=True),
)

# Join tokens: only a hash of each secret is kept.
join_tokens = sa.Table(
    "shoal_join_tokens",
    metadata,
    sa.Column("token_id", sa.String(), primary_key=True),
    sa.Column("token_hash", sa.String(), nullable=False),
    sa.Column("created", sa.Double(), nullable=False),
    sa.Column("expires", sa.Double(), nullable=True),
    sa.Column("max_uses", sa.BigInteger(), nullable=True),
    sa.Column("uses", sa.BigInteger(), nullable=False),
    sa.Column("node_id", sa.String(), nullable=True),
    sa.Column("revoked", sa.Double(), nullable=True),
    sa.Index("uq_shoal_join_tokens_hash", "token_hash", unique=True),
)

swarms = sa.Table(
    "shoal_swarms",
    metadata,
    sa.Column("swarm_id", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("plan", sa.Text(), nullable=False),
    sa.Column("owner", sa.String(), nullable=False),
    sa.Column("created", sa.Double(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("iteration", sa.BigInteger(), nullable=False),
    sa.Index("ix_shoal_swarms_created", "created"),
)

# seq is assigned by the store (max + 1 under a write lock), so it has no gaps and
# readers that page with ``after`` never skip a row committed late.
events = sa.Table(
    "shoal_events",
    metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
)

globals_ = sa.Table(
    "shoal_globals",
    metadata,
    sa.Column("swarm_id", sa.String(), primary_key=True),
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("version", sa.String(), nullable=False),
    sa.Column("value", sa.LargeBinary(), nullable=False),
)

global_history = sa.Table(
    "shoal_global_history",
    metadata,
    sa.Column("swarm_id", sa.String(), primary_key=True),
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("iteration", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("value", sa.LargeBinary(), nullable=False),
)

results = sa.Table(
    "shoal_results",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("swarm_id", sa.String(), nullable=False),
    sa.Column("iteration", sa.BigInteger(), nullable=False),
    sa.Column("alias", sa.String(), nullable=False),
    sa.Column("node_id", sa.String(), nullable=False),
    sa.Column("instance_id", sa.String(), nullable=False),
    sa.Column("tag", sa.String(), nullable=False),
    sa.Column("value", sa.LargeBinary(), nullable=False),
    sa.UniqueConstraint("instance_id", "tag", name="uq_shoal_results_instance_tag"),
    sa.Index("ix_shoal_results_task", "swarm_id", "iteration", "alias", "tag"),
)

dropped = sa.Table(
    "shoal_dropped",
    metadata,
    sa.Column("swarm_id", sa.String(), primary_key=True),
    sa.Column("iteration", sa.BigInteger(), primary_key=True, autoincrement=False),
)

state = sa.Table(
    "shoal_state",
    metadata,
    sa.Column("swarm_id", sa.String(), primary_key=True),
    sa.Column("node_id", sa.String(), primary_key=True),
    sa.Column("alias", sa.String(), primary_key=True),
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("value", sa.LargeBinary(), nullable=False),
)

logs = sa.Table(
    "shoal_logs",
    metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("swarm_id", sa.String(), nullable=False),
    sa.Column("node_id", sa.String(), nullable=False),
    sa.Column("alias", sa.String(), nullable=False),
    sa.Column("iteration", sa.BigInteger(), nullable=False),
    sa.Column("instance_id", sa.String(), nullable=False),
    sa.Column("level", sa.String(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("time", sa.Double(), nullable=False),
    sa.Column("ordinal", sa.BigInteger(), nullable=True),
    sa.Index("ix_shoal_logs_swarm_seq", "swarm_id", "seq"),
    sa.Index("uq_shoal_logs_instance_ordinal", "instance_id", "ordinal", unique=True),
)

# value is nullable because SQLite stores a NaN as NULL; the store reads NULL as NaN.
metrics = sa.Table(
    "shoal_metrics",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("swarm_id", sa.String(), nullable=False),
    sa.Column("node_id", sa.String(), nullable=False),
    sa.Column("alias", sa.String(), nullable=False),
    sa.Column("iteration", sa.BigInteger(), nullable=False),
    sa.Column("instance_id", sa.String(), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("value", sa.Double(), nullable=True),
    sa.Column("step", sa.BigInteger(), nullable=False),
    sa.Column("time", sa.Double(), nullable=False),
    sa.Column("ordinal", sa.BigInteger(), nullable=True),
    sa.Index("ix_shoal_metrics_swarm_name", "swarm_id", "name"),
    sa.Index("uq_shoal_metrics_instance_ordinal", "instance_id", "ordinal", unique=True),
)

# Which swarms a blob belongs to, and as what ("bundle" or "value"): the coordinator
# serves a blob only to those its swarms' rules allow (shoal._coord.access).
blob_claims = sa.Table(
    "shoal_blob_claims",
    metadata,
    sa.Column("digest", sa.String(), primary_key=True),
    sa.Column("swarm_id", sa.String(), primary_key=True),
    sa.Column("kind", sa.String(), primary_key=True),
    # Its size in bytes as the claim gave it (a swarm's values count against its quota).
    sa.Column("length", sa.BigInteger(), nullable=False, server_default="0"),
)

# The bytes of a swarm's value claims, kept with them: the quota check on every stored
# value reads one row instead of summing the swarm's claims (which grow every round).
swarm_values = sa.Table(
    "shoal_swarm_values",
    metadata,
    sa.Column("swarm_id", sa.String(), primary_key=True),
    sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
)

# Who has a blob: "node:<id>" or "user", given it under a swarm or ("") uploading it.
blob_grants = sa.Table(
    "shoal_blob_grants",
    metadata,
    sa.Column("digest", sa.String(), primary_key=True),
    sa.Column("holder", sa.String(), primary_key=True),
    sa.Column("swarm_id", sa.String(), primary_key=True),
)
