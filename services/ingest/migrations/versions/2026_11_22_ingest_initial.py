"""ingest: event store and dead-letter log

Revision ID: ingest_0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "ingest_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(32), nullable=True),
        sa.Column("identifiers", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("envelope", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name="pk_event"),
        schema="ingest",
    )
    op.create_index(
        "ix_event_identifiers",
        "event",
        ["identifiers"],
        schema="ingest",
        postgresql_using="gin",
    )
    op.create_index(
        "ix_event_tenant_id_time", "event", ["tenant_id", "time", "event_id"], schema="ingest"
    )
    op.create_table(
        "dead_letter",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=True),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_bytes", sa.Integer(), nullable=False),
        sa.Column("payload_digest", sa.String(64), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        schema="ingest",
    )
    op.create_index(
        "ix_dead_letter_tenant_id_received_at",
        "dead_letter",
        ["tenant_id", "received_at"],
        schema="ingest",
    )
    op.create_index(
        "uq_dead_letter_source",
        "dead_letter",
        ["source_topic", "source_partition", "source_offset", "payload_digest"],
        unique=True,
        schema="ingest",
    )


def downgrade() -> None:
    op.drop_table("dead_letter", schema="ingest")
    op.drop_table("event", schema="ingest")
