"""auth: erasure receipts and each service's completion

Revision ID: auth_0007
Revises: auth_0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "auth_0007"
down_revision = "auth_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A receipt holds ids and counts only, never the erased values.
    op.create_table(
        "erasure",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("auth.tenant.id"), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("services", ARRAY(sa.String()), nullable=False),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        schema="auth",
    )
    op.create_index("ix_erasure_tenant_id", "erasure", ["tenant_id", "requested_at"], schema="auth")
    op.create_table(
        "erasure_step",
        # No foreign key: a service's report must never stall its consumer.
        sa.Column("erasure_id", sa.Uuid(), primary_key=True),
        sa.Column("service", sa.String(32), primary_key=True),
        sa.Column("counts", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "completed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        schema="auth",
    )


def downgrade() -> None:
    op.drop_table("erasure_step", schema="auth")
    op.drop_table("erasure", schema="auth")
