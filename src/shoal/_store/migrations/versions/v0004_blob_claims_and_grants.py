"""Blob ownership: which swarms each blob belongs to (as a bundle or a value), and who
has it (a node or the user, given it under a swarm or uploading it), so that the
coordinator serves a blob only to those allowed to read it (issue #14, point 3).

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
# After 0003 (join tokens and node revocation).
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``shoal_blob_claims`` and ``shoal_blob_grants``."""
    op.create_table(
        "shoal_blob_claims",
        sa.Column("digest", sa.String(), primary_key=True),
        sa.Column("swarm_id", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), primary_key=True),
        sa.Column("length", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "shoal_blob_grants",
        sa.Column("digest", sa.String(), primary_key=True),
        sa.Column("holder", sa.String(), primary_key=True),
        sa.Column("swarm_id", sa.String(), primary_key=True),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("shoal_blob_grants")
    op.drop_table("shoal_blob_claims")
