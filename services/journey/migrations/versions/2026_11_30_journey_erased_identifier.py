"""journey: tombstones of erased identifiers (salted hashes), so their events are dropped

Revision ID: journey_0007
Revises: journey_0006
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0007"
down_revision = "journey_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE journey.erased_identifier (
               tenant_id text NOT NULL,
               identifier_hash text NOT NULL,
               erasure_id uuid NOT NULL,
               erased_at timestamptz NOT NULL DEFAULT now(),
               CONSTRAINT pk_erased_identifier PRIMARY KEY (tenant_id, identifier_hash)
           )"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE journey.erased_identifier")
