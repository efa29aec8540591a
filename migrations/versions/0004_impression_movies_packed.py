"""Impressions keep their movies in one column (``impressions.movies``) instead of ``impression_items``,
and lose the index on (user_id, created_at).

One row per answer instead of one per movie shown, and one index less to keep: the recorder's
writes cost about a fifth of the CPU (docs/online-metrics.md, "Cost"). No query looks impressions
up by user. The movies of the existing impressions are packed into the new column, in their
positions, before the items table goes; the downgrade unpacks them and rebuilds the index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Digits per movie id in ``impressions.movies`` (movierec.db.schema.SHOWN_ID_DIGITS, fixed here:
#: a migration must not change when the code does).
DIGITS = 10
MAX_SHOWN = 100

#: Each impression's movies, zero-padded and concatenated in position order. The aggregate and the
#: padding are spelled differently by the two backends; on SQLite, group_concat follows the
#: window's ORDER BY (an aggregate's own ORDER BY needs SQLite 3.44).
_PACKED = {
    "postgresql": f"""
        SELECT request_id, string_agg(lpad(CAST(movie_id AS TEXT), {DIGITS}, '0'), '' ORDER BY position) AS packed
        FROM impression_items GROUP BY request_id""",
    "sqlite": f"""
        SELECT DISTINCT request_id, packed FROM (
            SELECT request_id, group_concat(printf('%0{DIGITS}d', movie_id), '') OVER (
                PARTITION BY request_id ORDER BY position
                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS packed
            FROM impression_items)""",
}


def upgrade() -> None:
    # Plain ALTER TABLE, never batch mode's copy of the table: on SQLite the copy drops the old
    # table, and with foreign keys on that cascades to the events of every impression.
    op.add_column("impressions",
                  sa.Column("movies", sa.String(length=MAX_SHOWN * DIGITS), server_default="", nullable=False))
    packed = _PACKED[op.get_bind().dialect.name]
    op.execute(f"UPDATE impressions SET movies = p.packed FROM ({packed}) p WHERE p.request_id = impressions.request_id")
    op.drop_table("impression_items")
    op.drop_index("ix_impressions_user_id_created_at", table_name="impressions")


def downgrade() -> None:
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
    op.execute(f"""
        WITH RECURSIVE positions(position) AS (
            SELECT 0 UNION ALL SELECT position + 1 FROM positions WHERE position < {MAX_SHOWN - 1})
        INSERT INTO impression_items (request_id, position, movie_id)
        SELECT i.request_id, p.position, CAST(SUBSTR(i.movies, p.position * {DIGITS} + 1, {DIGITS}) AS INTEGER)
        FROM impressions i JOIN positions p ON p.position * {DIGITS} < LENGTH(i.movies)""")
    op.drop_column("impressions", "movies")  # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), no copy: see upgrade()
