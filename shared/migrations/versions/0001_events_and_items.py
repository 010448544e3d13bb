"""Events (range-partitioned by month, globally unique event ids) and the item catalogue.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TYPE event_type AS ENUM ('view', 'click', 'add_to_cart', 'purchase', 'rating');

    -- Partitions are created on demand by the writers (shared/event_store.py) for whatever
    -- month an accepted event falls in. A primary key on a partitioned table must include
    -- the partition key, so the global uniqueness of event_id lives in event_ids below.
    CREATE TABLE events (
        event_id    text        NOT NULL,
        user_id     text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 256),
        item_id     text        NOT NULL CHECK (length(item_id) BETWEEN 1 AND 256),
        type        event_type  NOT NULL,
        value       double precision,
        occurred_at timestamptz NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now()
    ) PARTITION BY RANGE (occurred_at);

    COMMENT ON TABLE events IS
        'Append-only log of shopper events; one partition per calendar month (UTC).';

    -- One row per client-supplied event id ever accepted: re-sending an id is a no-op.
    CREATE TABLE event_ids (
        event_id text PRIMARY KEY
    );

    CREATE TABLE items (
        item_id    text        PRIMARY KEY CHECK (length(item_id) BETWEEN 1 AND 256),
        category   text        CHECK (category IS NULL OR length(category) <= 256),
        available  boolean     NOT NULL DEFAULT true,
        attributes jsonb       NOT NULL DEFAULT '{}'::jsonb,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX items_category_idx ON items (category);
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE items;
    DROP TABLE event_ids;
    DROP TABLE events;
    DROP TYPE event_type;
    """)
