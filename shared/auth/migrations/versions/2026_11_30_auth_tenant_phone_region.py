"""auth: a tenant's own phone region (overrides WAYPOINT_PHONE_REGION)

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0002"
down_revision = "auth_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, and NULL means "the shared default".
    op.add_column("tenant", sa.Column("phone_region", sa.String(2), nullable=True), schema="auth")
    op.create_check_constraint(
        op.f("ck_tenant_phone_region"), "tenant", "phone_region ~ '^[A-Z]{2}$'", schema="auth"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_tenant_phone_region"), "tenant", schema="auth")
    op.drop_column("tenant", "phone_region", schema="auth")
