"""alerts: tombstones of erased customers, so a replayed activity does not bring them back

Revision ID: alerts_0003
Revises: alerts_0002
Create Date: 2026-11-30
"""

from alembic import op

revision = "alerts_0003"
down_revision = "alerts_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE alerts.erased_customer (
               tenant_id text NOT NULL,
               customer_id text NOT NULL,
               erasure_id uuid NOT NULL,
               erased_at timestamptz NOT NULL DEFAULT now(),
               CONSTRAINT pk_erased_customer PRIMARY KEY (tenant_id, customer_id)
           )"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE alerts.erased_customer")
