"""auth: key expiry and rotation; context:write; rate-limit counters

Revision ID: auth_0005
Revises: auth_0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0005"
down_revision = "auth_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no row. NULL: the key never expires.
    op.add_column(
        "api_key", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True), schema="auth"
    )
    # A rotated key's successor points back to it (`waypoint keys rotate`).
    op.add_column(
        "api_key",
        sa.Column(
            "rotated_from",
            sa.Uuid(),
            sa.ForeignKey("auth.api_key.id", name=op.f("fk_api_key_rotated_from_api_key")),
            nullable=True,
        ),
        schema="auth",
    )
    # Writes to the context (facts; merge and split by hand) get their own scope. Keys that could
    # write facts with context:read until now keep doing so; new keys must ask for it.
    op.execute(
        "UPDATE auth.api_key SET scopes = array_append(scopes, 'context:write') "
        "WHERE 'context:read' = ANY(scopes) AND NOT ('context:write' = ANY(scopes))"
    )
    # Shared rate-limit counters (shared/ratelimit): UNLOGGED, counters need no crash safety.
    op.execute(
        "CREATE UNLOGGED TABLE auth.rate_counter ("
        "bucket text NOT NULL, window_start bigint NOT NULL, hits bigint NOT NULL, "
        "CONSTRAINT pk_rate_counter PRIMARY KEY (bucket, window_start))"
    )


def downgrade() -> None:
    op.drop_table("rate_counter", schema="auth")
    op.execute(
        "UPDATE auth.api_key SET scopes = array_remove(scopes, 'context:write') "
        "WHERE 'context:read' = ANY(scopes)"
    )
    op.drop_column("api_key", "rotated_from", schema="auth")
    op.drop_column("api_key", "expires_at", schema="auth")
