"""auth: server-side sessions of the web pages

Revision ID: auth_0003
Revises: auth_0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "auth_0003"
down_revision = "auth_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The cookie carries a random token; only its SHA-256 is stored (a leaked table is no key).
    # A session is bound to the API key it was opened with: revoking the key ends it (cascade),
    # and the key's scopes are read on every request, so pages check what the API checks.
    op.create_table(
        "web_session",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("auth.tenant.id"), nullable=False),
        sa.Column(
            "key_id",
            sa.Uuid(),
            sa.ForeignKey("auth.api_key.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        schema="auth",
    )
    op.create_index("ix_web_session_expires_at", "web_session", ["expires_at"], schema="auth")
    op.create_index("ix_web_session_key_id", "web_session", ["key_id"], schema="auth")


def downgrade() -> None:
    op.drop_table("web_session", schema="auth")
