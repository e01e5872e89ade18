"""The initial store schema: nodes, swarms, events, globals, results, state, logs, metrics.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "shoal_nodes",
        sa.Column("node_id", sa.String(), primary_key=True),
        sa.Column("credential_hash", sa.String(), nullable=False),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("gpu", sa.Boolean(), nullable=False),
        sa.Column("images", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
    )
    op.create_table(
        "shoal_swarms",
        sa.Column("swarm_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("iteration", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_shoal_swarms_created", "shoal_swarms", ["created"])
    op.create_table(
        "shoal_events",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "shoal_globals",
        sa.Column("swarm_id", sa.String(), primary_key=True),
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "shoal_global_history",
        sa.Column("swarm_id", sa.String(), primary_key=True),
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("iteration", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "shoal_results",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("swarm_id", sa.String(), nullable=False),
        sa.Column("iteration", sa.BigInteger(), nullable=False),
        sa.Column("alias", sa.String(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("tag", sa.String(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("instance_id", "tag", name="uq_shoal_results_instance_tag"),
    )
    op.create_index(
        "ix_shoal_results_task", "shoal_results", ["swarm_id", "iteration", "alias", "tag"]
    )
    op.create_table(
        "shoal_dropped",
        sa.Column("swarm_id", sa.String(), primary_key=True),
        sa.Column("iteration", sa.BigInteger(), primary_key=True, autoincrement=False),
    )
    op.create_table(
        "shoal_state",
        sa.Column("swarm_id", sa.String(), primary_key=True),
        sa.Column("node_id", sa.String(), primary_key=True),
        sa.Column("alias", sa.String(), primary_key=True),
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "shoal_logs",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("swarm_id", sa.String(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("alias", sa.String(), nullable=False),
        sa.Column("iteration", sa.BigInteger(), nullable=False),
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
    )
    op.create_index("ix_shoal_logs_swarm_seq", "shoal_logs", ["swarm_id", "seq"])
    op.create_table(
        "shoal_metrics",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("swarm_id", sa.String(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("alias", sa.String(), nullable=False),
        sa.Column("iteration", sa.BigInteger(), nullable=False),
        sa.Column("instance_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
    )
    op.create_index("ix_shoal_metrics_swarm_name", "shoal_metrics", ["swarm_id", "name"])


def downgrade() -> None:
    """Drop every table."""
    for table in (
        "shoal_metrics",
        "shoal_logs",
        "shoal_state",
        "shoal_dropped",
        "shoal_results",
        "shoal_global_history",
        "shoal_globals",
        "shoal_events",
        "shoal_swarms",
        "shoal_nodes",
    ):
        op.drop_table(table)
