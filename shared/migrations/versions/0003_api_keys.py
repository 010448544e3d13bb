"""API keys: only a SHA-256 of each key is kept, with its scopes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- A key is shown once, when it is created; what is kept is its SHA-256 (looked up through
    -- the unique index) and its first characters, so people can tell their keys apart.
    -- last_used_at is coarse on purpose: it is written at most about once an hour per key
    -- (shared/keys.py), never on every request.
    CREATE TABLE api_keys (
        key_id       uuid        PRIMARY KEY,
        name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
        prefix       text        NOT NULL,
        key_hash     bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
        scopes       text[]      NOT NULL CHECK (
            cardinality(scopes) > 0
            -- <@ is false for a NULL element, so this also keeps NULLs out
            AND scopes <@ ARRAY['recommend', 'events', 'admin', 'analyst']::text[]
        ),
        created_at   timestamptz NOT NULL DEFAULT now(),
        revoked_at   timestamptz,
        last_used_at timestamptz
    );
    CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE api_keys;")
