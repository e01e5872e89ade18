"""Join tokens (expiry, a number of uses, a node id they are bound to, revocation; only
a hash of each secret is kept) and the time a node was revoked by the operator.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``shoal_join_tokens``; add the nullable ``revoked`` column to nodes."""
    op.create_table(
        "shoal_join_tokens",
        sa.Column("token_id", sa.String(), primary_key=True),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("created", sa.Double(), nullable=False),
        sa.Column("expires", sa.Double(), nullable=True),
        sa.Column("max_uses", sa.BigInteger(), nullable=True),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=True),
        sa.Column("revoked", sa.Double(), nullable=True),
    )
    op.create_index("uq_shoal_join_tokens_hash", "shoal_join_tokens", ["token_hash"], unique=True)
    with op.batch_alter_table("shoal_nodes") as batch:
        batch.add_column(sa.Column("revoked", sa.Double(), nullable=True))


def downgrade() -> None:
    """Drop the column and the table."""
    with op.batch_alter_table("shoal_nodes") as batch:
        batch.drop_column("revoked")
    op.drop_index("uq_shoal_join_tokens_hash", table_name="shoal_join_tokens")
    op.drop_table("shoal_join_tokens")
