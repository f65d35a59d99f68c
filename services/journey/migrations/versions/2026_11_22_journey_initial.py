"""journey: customers, identity graph, applied events, context, merges, splits

Revision ID: journey_0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

revision = "journey_0001"
down_revision = None
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE journey.customer (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    status text NOT NULL DEFAULT 'active',
    merged_into uuid,
    strength smallint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_customer PRIMARY KEY (tenant_id, id),
    CONSTRAINT ck_customer_status CHECK (status IN ('active', 'merged'))
);
CREATE INDEX ix_customer_merged_into ON journey.customer (tenant_id, merged_into)
    WHERE merged_into IS NOT NULL;

-- One row per (identifier, customer). An identifier normally has one holder, several only
-- when kept apart on purpose (provisional links, shared numbers up to a per-type limit).
CREATE TABLE journey.identifier (
    tenant_id text NOT NULL,
    id_type text NOT NULL,
    value text NOT NULL,
    customer_id uuid NOT NULL,
    strength smallint NOT NULL,
    verified_by text,
    source_event_id text,
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    CONSTRAINT pk_identifier PRIMARY KEY (tenant_id, id_type, value, customer_id)
);
CREATE INDEX ix_identifier_customer ON journey.identifier (tenant_id, customer_id);

-- Every applied event (also the exactly-once ledger: the primary key is the dedupe key).
CREATE TABLE journey.event (
    tenant_id text NOT NULL,
    event_id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    customer_id uuid,
    type text NOT NULL,
    time timestamptz NOT NULL,
    identifier_keys text[] NOT NULL,
    outcome text NOT NULL,
    rule text NOT NULL,
    envelope jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_event PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX ix_event_customer_time
    ON journey.event (tenant_id, customer_id, time DESC, event_id DESC);

-- json, not jsonb: the document is only ever read whole, and json is returned without re-rendering.
CREATE TABLE journey.context (
    tenant_id text NOT NULL,
    customer_id uuid NOT NULL,
    doc json NOT NULL,
    version integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_context PRIMARY KEY (tenant_id, customer_id)
);

CREATE TABLE journey.merge (
    tenant_id text NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    survivor_id uuid NOT NULL,
    merged_id uuid NOT NULL,
    event_id text,
    rule text NOT NULL,
    via text,
    actor text NOT NULL,
    reason text,
    absorbed_ids uuid[] NOT NULL DEFAULT '{}',
    survivor_strength smallint NOT NULL,
    merged_strength smallint NOT NULL,
    after_seq bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    undone_at timestamptz,
    CONSTRAINT pk_merge PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ix_merge_survivor ON journey.merge (tenant_id, survivor_id);

CREATE TABLE journey.split (
    tenant_id text NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    merge_id bigint NOT NULL,
    customer_id uuid NOT NULL,
    restored_id uuid NOT NULL,
    actor text NOT NULL,
    reason text,
    moved_events integer NOT NULL,
    moved_identifiers integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_split PRIMARY KEY (tenant_id, id)
);

CREATE TABLE journey.provisional_link (
    tenant_id text NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id uuid NOT NULL,
    other_id uuid NOT NULL,
    via text NOT NULL,
    strength smallint NOT NULL,
    event_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_provisional_link PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ix_provisional_link_customer ON journey.provisional_link (tenant_id, customer_id);
CREATE INDEX ix_provisional_link_other ON journey.provisional_link (tenant_id, other_id);
"""


def upgrade() -> None:
    # One statement at a time: asyncpg prepares each statement and refuses several at once.
    for statement in DDL.split(";"):
        body = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            op.execute(body)


def downgrade() -> None:
    for table in (
        "provisional_link",
        "split",
        "merge",
        "context",
        "event",
        "identifier",
        "customer",
    ):
        op.execute(f"DROP TABLE journey.{table}")
