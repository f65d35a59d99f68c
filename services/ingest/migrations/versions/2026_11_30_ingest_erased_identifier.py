"""ingest: tombstones of erased identifiers (salted hashes), so their events are dropped

Revision ID: ingest_0002
Revises: ingest_0001
Create Date: 2026-11-30
"""

from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE ingest.erased_identifier (
               tenant_id text NOT NULL,
               identifier_hash text NOT NULL,
               erasure_id uuid NOT NULL,
               erased_at timestamptz NOT NULL DEFAULT now(),
               CONSTRAINT pk_erased_identifier PRIMARY KEY (tenant_id, identifier_hash)
           )"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE ingest.erased_identifier")
