"""Drop the index on impression_items.movie_id: no query uses it, and it was most of the writer's cost.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_impression_items_movie_id", table_name="impression_items")


def downgrade() -> None:
    op.create_index("ix_impression_items_movie_id", "impression_items", ["movie_id"])
