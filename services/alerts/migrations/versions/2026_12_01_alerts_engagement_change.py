"""alerts: engagement_change, the outbox of engagement changes published to journey

Revision ID: alerts_0002
Revises: alerts_0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "alerts_0002"
down_revision = "alerts_0001"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE alerts.engagement_change (
    tenant_id varchar(64) NOT NULL,
    customer_id varchar(256) NOT NULL,
    version bigint NOT NULL,
    published_version bigint NOT NULL DEFAULT 0,
    changed_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    claimed_until timestamptz,
    CONSTRAINT pk_engagement_change PRIMARY KEY (tenant_id, customer_id)
);
-- Only the rows still to publish: the relay's claim reads this index, never the whole table.
CREATE INDEX ix_engagement_change_pending ON alerts.engagement_change (changed_at)
    WHERE version > published_version
"""


def upgrade() -> None:
    for statement in DDL.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS alerts.engagement_change")
