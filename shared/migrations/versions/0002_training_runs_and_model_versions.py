"""Training runs, model versions and the promoted pointer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- Block-range indexes cost almost nothing to maintain on append-only data: they let the
    -- skip rule ("any event since the last version?") and time-window loads skip old blocks.
    CREATE INDEX events_received_at_brin ON events USING brin (received_at);
    CREATE INDEX events_occurred_at_brin ON events USING brin (occurred_at);

    CREATE TYPE run_status AS ENUM
        ('queued', 'running', 'promoted', 'rejected', 'skipped', 'failed', 'over_budget');

    -- One row per retrain attempt, from trigger to outcome. `phase` and `progress` are
    -- updated as the run goes, so operators can watch it (`recsys train --wait`).
    CREATE TABLE training_runs (
        run_id        uuid        PRIMARY KEY,
        status        run_status  NOT NULL DEFAULT 'queued',
        trigger       text        NOT NULL,
        task_id       text,
        forced        boolean     NOT NULL DEFAULT false,
        requested_at  timestamptz NOT NULL DEFAULT now(),
        started_at    timestamptz,
        finished_at   timestamptz,
        heartbeat_at  timestamptz,
        phase         text,
        phases        jsonb       NOT NULL DEFAULT '[]'::jsonb,
        settings      jsonb       NOT NULL DEFAULT '{}'::jsonb,
        metrics       jsonb       NOT NULL DEFAULT '{}'::jsonb,
        model_version text,
        reason        text,
        error         text,
        host          text,
        pid           integer
    );
    CREATE INDEX training_runs_requested_idx ON training_runs (requested_at DESC);
    -- At most one run is queued or running at a time: a second trigger finds the first.
    CREATE UNIQUE INDEX training_runs_one_active ON training_runs ((true))
        WHERE status IN ('queued', 'running');

    CREATE TYPE version_status AS ENUM ('promoted', 'rejected', 'kept', 'retired');

    CREATE TABLE model_versions (
        version          text        PRIMARY KEY,
        run_id           uuid        NOT NULL REFERENCES training_runs (run_id),
        created_at       timestamptz NOT NULL DEFAULT now(),
        status           version_status NOT NULL,
        reason           text        NOT NULL,
        algorithm        text        NOT NULL,
        params           jsonb       NOT NULL,
        metrics          jsonb       NOT NULL,
        data             jsonb       NOT NULL,
        artifact_path    text        NOT NULL,
        artifact_bytes   bigint      NOT NULL,
        events_until     timestamptz,
        received_until   timestamptz,
        files_deleted_at timestamptz
    );
    CREATE INDEX model_versions_created_idx ON model_versions (created_at DESC);

    -- The promoted pointer: one row. Moving it and inserting the version row happen in one
    -- transaction; a NOTIFY on the same commit tells API processes to reload.
    CREATE TABLE model_pointer (
        singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
        version     text        NOT NULL REFERENCES model_versions (version),
        previous    text        REFERENCES model_versions (version),
        moved_at    timestamptz NOT NULL DEFAULT now(),
        moved_by    text        NOT NULL
    );
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE model_pointer;
    DROP TABLE model_versions;
    DROP TYPE version_status;
    DROP TABLE training_runs;
    DROP TYPE run_status;
    DROP INDEX events_occurred_at_brin;
    DROP INDEX events_received_at_brin;
    """)
