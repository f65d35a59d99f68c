"""auth: per-tenant data keys of sensitive values, wrapped by a key-encryption key

Revision ID: auth_0006
Revises: auth_0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0006"
down_revision = "auth_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One data key per tenant (AES-256), stored only wrapped (AES-GCM) by the KEK ``kek_id``
    # of WAYPOINT_ENCRYPTION_KEYS; rotating the KEK re-wraps these rows, never the data.
    op.create_table(
        "data_key",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("auth.tenant.id"), primary_key=True),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        schema="auth",
    )


def downgrade() -> None:
    op.drop_table("data_key", schema="auth")
