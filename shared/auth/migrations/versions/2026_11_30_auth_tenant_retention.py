"""auth: per-tenant retention (days; NULL: the WAYPOINT_RETENTION_* default, 0: keep)

Revision ID: auth_0008
Revises: auth_0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0008"
down_revision = "auth_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_retention",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("auth.tenant.id"), primary_key=True),
        sa.Column("raw_events_days", sa.Integer(), nullable=True),
        sa.Column("dead_letters_days", sa.Integer(), nullable=True),
        sa.Column("timelines_days", sa.Integer(), nullable=True),
        sa.Column("delivery_logs_days", sa.Integer(), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        schema="auth",
    )


def downgrade() -> None:
    op.drop_table("tenant_retention", schema="auth")
