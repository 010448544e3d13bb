"""The tradeoff lab's sweeps and their measured candidates.

A sweep (`tradeoff_runs`) keeps the workload, quality floor and price version it was priced
with, so its choice can be re-read and audited later; each candidate (`tradeoff_candidates`)
keeps its settings, what was measured, what it costs per day under that workload and whether
it is on the cost/quality frontier. A failed candidate keeps its error; the sweep goes on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE tradeoff_runs (
        run_id              uuid        PRIMARY KEY,
        created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
        finished_at         timestamptz,
        status              text        NOT NULL DEFAULT 'running'
                            CHECK (status IN ('running', 'done', 'failed')),
        mode                text        NOT NULL CHECK (mode IN ('inline', 'celery')),
        workload            jsonb       NOT NULL CHECK (jsonb_typeof(workload) = 'object'),
        floor               double precision NOT NULL CHECK (floor > 0 AND floor <= 1),
        price_id            bigint      NOT NULL REFERENCES price_book (price_id),
        currency            text        NOT NULL,
        config              jsonb       NOT NULL,  -- the retrain settings the sweep started from
        baseline_candidate  integer,
        chosen_candidate    integer,
        best_ndcg           double precision,
        saving              double precision,      -- baseline's daily cost - chosen's
        applied             boolean     NOT NULL DEFAULT false,
        applied_at          timestamptz,
        applied_settings_id bigint,
        applied_retrain     uuid,
        task_id             text,
        error               text
    );
    CREATE INDEX tradeoff_runs_created_idx ON tradeoff_runs (created_at DESC);

    CREATE TABLE tradeoff_candidates (
        run_id               uuid        NOT NULL REFERENCES tradeoff_runs ON DELETE CASCADE,
        candidate_id         integer     NOT NULL,
        label                text        NOT NULL,
        model                jsonb       NOT NULL,
        serving              jsonb       NOT NULL,
        is_baseline          boolean     NOT NULL DEFAULT false,
        status               text        NOT NULL DEFAULT 'queued'
                             CHECK (status IN ('queued', 'running', 'done', 'failed')),
        error                text,
        started_at           timestamptz,
        finished_at          timestamptz,
        k                    integer,
        ndcg                 double precision,
        recall               double precision,
        precision            double precision,
        eval_users           integer,
        train_wall_seconds   double precision,
        train_cpu_seconds    double precision,
        train_peak_rss_bytes bigint,
        final_fit_factor     double precision,
        training_cost        double precision,  -- per retrain
        requests             integer,           -- replayed
        serving_cpu_per_1000 double precision,  -- process CPU seconds per 1,000 requests
        p50_ms               double precision,
        p99_ms               double precision,
        rss_growth_bytes     bigint,
        artifact_bytes       bigint,
        recall_vs_exact      double precision,  -- served lists against exact top-n
        ann_recall           double precision,  -- the ANN index's recall@10 (ann only)
        notes                text,
        processes            integer,
        daily_training       double precision,
        daily_serving_used   double precision,
        daily_capacity_idle  double precision,
        daily_memory         double precision,
        daily_cost           double precision,
        on_frontier          boolean     NOT NULL DEFAULT false,
        PRIMARY KEY (run_id, candidate_id)
    );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE tradeoff_candidates; DROP TABLE tradeoff_runs;")
