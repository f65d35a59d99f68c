"""journey: the transactional outbox (activity for alerts) and idempotency keys of commands

Revision ID: journey_0004
Revises: journey_0003
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0004"
down_revision = "journey_0003"
branch_labels = None
depends_on = None

DDL = [
    # Messages written in the same transaction as their effects, published by the relay
    # (shared/outbox.py) and deleted once the broker acknowledged them. ``lane`` (a hash of the
    # key) is the unit of ordering: one relay at a time publishes a lane, in id order.
    """
    CREATE TABLE journey.outbox (
        id bigint GENERATED ALWAYS AS IDENTITY,
        tenant_id text NOT NULL,
        lane smallint NOT NULL,
        topic text NOT NULL,
        key bytea,
        value bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        CONSTRAINT pk_outbox PRIMARY KEY (id)
    )
    """,
    # A command's Idempotency-Key: the request's fingerprint and the response it got, so a
    # retried request has its effect once and gets the same answer (shared/idempotency.py).
    """
    CREATE TABLE journey.idempotency_key (
        tenant_id text NOT NULL,
        key text NOT NULL,
        request_hash text NOT NULL,
        status_code smallint NOT NULL,
        response jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_idempotency_key PRIMARY KEY (tenant_id, key)
    )
    """,
    "CREATE INDEX ix_idempotency_key_created_at ON journey.idempotency_key (created_at)",
]


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE journey.idempotency_key")
    op.execute("DROP TABLE journey.outbox")
