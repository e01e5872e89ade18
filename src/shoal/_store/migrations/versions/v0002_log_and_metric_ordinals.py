"""Log and metric ordinals: a record's number within its instance, unique per instance,
so that an upload sent again after its answer was lost is stored once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_TABLES = ("shoal_logs", "shoal_metrics")


def upgrade() -> None:
    """Add the nullable ``ordinal`` column and a unique (instance_id, ordinal) index."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("ordinal", sa.BigInteger(), nullable=True))
            batch.create_index(
                f"uq_{table}_instance_ordinal", ["instance_id", "ordinal"], unique=True
            )


def downgrade() -> None:
    """Drop the index and the column."""
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"uq_{table}_instance_ordinal")
            batch.drop_column("ordinal")
