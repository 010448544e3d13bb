"""Retrain settings chosen at runtime (tradeoff lab, tuning, operators) and tuning runs.

`retrain_settings` is append-only: the newest row is in force; each row says where it came
from, so a regression can be traced to the choice that caused it and undone by adding the
previous choice again. Its `model` and `serving` hold what overrides the environment's
defaults (offline/retrain_settings.py); the environment stays the fallback.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE retrain_settings (
        settings_id  bigserial   PRIMARY KEY,
        created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
        source       text        NOT NULL CHECK (source IN ('operator', 'tradeoff', 'tuning')),
        model        jsonb       NOT NULL CHECK (jsonb_typeof(model) = 'object'),
        serving      jsonb       NOT NULL CHECK (jsonb_typeof(serving) = 'object'),
        origin       jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- e.g. tradeoff run/candidate
        note         text
    );

    -- One hyper-parameter search (offline/tuning.py): its budget, trials and best settings.
    CREATE TABLE tuning_runs (
        tuning_id       uuid        PRIMARY KEY,
        started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
        finished_at     timestamptz,
        status          text        NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'done', 'failed', 'over_budget')),
        trigger         text        NOT NULL,
        metric          text        NOT NULL,
        max_trials      integer     CHECK (max_trials > 0),
        max_cost        double precision CHECK (max_cost > 0),
        currency        text,
        trials          jsonb       NOT NULL DEFAULT '[]'::jsonb,
        best_params     jsonb,
        best_value      double precision,
        cpu_seconds     double precision NOT NULL DEFAULT 0,
        cost            double precision,
        applied         boolean     NOT NULL DEFAULT false,
        error           text
    );
    CREATE INDEX tuning_runs_started_idx ON tuning_runs (started_at DESC);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE tuning_runs; DROP TABLE retrain_settings;")
