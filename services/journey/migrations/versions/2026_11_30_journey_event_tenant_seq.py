"""journey: index (tenant_id, seq) on event, for a merge's split boundary

Revision ID: journey_0002
Revises: journey_0001
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0002"
down_revision = "journey_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not CONCURRENTLY: every schema migrates in one transaction (shared/migrations.py). On a
    # large journey.event this blocks event writes while it builds; docs/operations.md says so.
    op.execute("CREATE INDEX ix_event_tenant_id_seq ON journey.event (tenant_id, seq)")


def downgrade() -> None:
    op.execute("DROP INDEX journey.ix_event_tenant_id_seq")
