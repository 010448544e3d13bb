"""The tradeoff lab prices each candidate at several API process sizes.

`vcpus_per_process` is the size a candidate's daily cost was priced at (the cheapest
eligible one, or the fixed size of the workload); `sizings` keeps every size priced (its
processes, idle capacity, memory, total and stretched p99), so the report can show a small
shop the cheaper sizing next to the one it runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE tradeoff_candidates
        ADD COLUMN vcpus_per_process double precision,
        ADD COLUMN sizings jsonb CHECK (sizings IS NULL OR jsonb_typeof(sizings) = 'array');
    """)


def downgrade() -> None:
    op.execute(
        "ALTER TABLE tradeoff_candidates DROP COLUMN sizings, DROP COLUMN vcpus_per_process;"
    )
