"""The bytes of each swarm's value claims in one row (``shoal_swarm_values``), so that
the quota check of a stored value costs one lookup, not a sum over every value the
swarm ever claimed (issue #21: a long run's claims grow every round).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``shoal_swarm_values`` from the claims already stored."""
    op.create_table(
        "shoal_swarm_values",
        sa.Column("swarm_id", sa.String(), primary_key=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(
        "INSERT INTO shoal_swarm_values (swarm_id, bytes) "
        "SELECT swarm_id, SUM(length) FROM shoal_blob_claims WHERE kind = 'value' "
        "GROUP BY swarm_id"
    )


def downgrade() -> None:
    """Drop it (the claims still hold every length)."""
    op.drop_table("shoal_swarm_values")
