"""Impressions (what /recommend and /movies/{id}/similar showed), their items, and events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "impressions",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_impressions")),
    )
    op.create_index("ix_impressions_created_at", "impressions", ["created_at"])
    op.create_index("ix_impressions_user_id_created_at", "impressions", ["user_id", "created_at"])
    op.create_table(
        "impression_items",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["impressions.request_id"],
                                name=op.f("fk_impression_items_request_id_impressions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id", "position", name=op.f("pk_impression_items")),
    )
    op.create_index("ix_impression_items_movie_id", "impression_items", ["movie_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("movie_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["impressions.request_id"],
                                name=op.f("fk_events_request_id_impressions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("request_id", "movie_id", "kind", name="uq_events_request_movie_kind"),
    )
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_impression_items_movie_id", table_name="impression_items")
    op.drop_table("impression_items")
    op.drop_index("ix_impressions_user_id_created_at", table_name="impressions")
    op.drop_index("ix_impressions_created_at", table_name="impressions")
    op.drop_table("impressions")
