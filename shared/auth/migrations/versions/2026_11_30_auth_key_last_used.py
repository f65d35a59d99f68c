"""auth: when each API key was last used (shown by `waypoint keys list`)

Revision ID: auth_0004
Revises: auth_0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0004"
down_revision = "auth_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_key",
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        schema="auth",
    )


def downgrade() -> None:
    op.drop_column("api_key", "last_used_at", schema="auth")
