"""journey: the journey map (step log, journeys, touchpoint-level aggregates, pending queue)

Revision ID: journey_0003
Revises: journey_0002
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0003"
down_revision = "journey_0002"
branch_labels = None
depends_on = None

DDL = """
-- Events (or whole customers, event_id NULL: merge, split) waiting to be folded into the map.
-- Written in the worker's chunk transaction with the event's JSON (so the compactor need not
-- read the event table back), drained by the map compactor.
CREATE TABLE journey.map_pending (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id text NOT NULL,
    customer_id uuid NOT NULL,
    event_id text,
    type text,
    time_us bigint,
    body text,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_map_pending PRIMARY KEY (seq)
);
CREATE INDEX ix_map_pending_customer ON journey.map_pending (tenant_id, customer_id);

-- The step log: one row per step of a resolved customer, summary is the mergeable fold.
CREATE TABLE journey.map_step (
    tenant_id text NOT NULL,
    customer_id uuid NOT NULL,
    step_key text NOT NULL,
    at timestamptz NOT NULL,
    event_id text NOT NULL,
    activity text NOT NULL,
    department text,
    events integer NOT NULL,
    summary jsonb NOT NULL,
    CONSTRAINT pk_map_step PRIMARY KEY (tenant_id, customer_id, step_key)
);

-- What a customer's current contribution was computed with: segment traits and first seen.
CREATE TABLE journey.map_customer (
    tenant_id text NOT NULL,
    customer_id uuid NOT NULL,
    profile jsonb NOT NULL,
    first_seen_at timestamptz,
    steps integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_map_customer PRIMARY KEY (tenant_id, customer_id)
);

-- One row per journey (kind 0 customer, 1 episode, 2 case): variants, drill-down, export.
CREATE TABLE journey.map_journey (
    tenant_id text NOT NULL,
    customer_id uuid NOT NULL,
    kind smallint NOT NULL,
    journey_key text NOT NULL,
    day date NOT NULL,
    start_at timestamptz NOT NULL,
    steps integer NOT NULL,
    activities text[] NOT NULL,
    times_us bigint[] NOT NULL,
    age_group text,
    region text,
    tier text,
    lifecycle_stage text,
    tenure text,
    CONSTRAINT pk_map_journey PRIMARY KEY (tenant_id, customer_id, kind, journey_key)
);
CREATE INDEX ix_map_journey_day ON journey.map_journey (tenant_id, kind, day, customer_id);

-- Segment rows of the aggregates: position idx + 1 of every vector ('' all is position 1).
CREATE TABLE journey.map_segment (
    tenant_id text NOT NULL,
    segment text NOT NULL,
    idx smallint NOT NULL,
    CONSTRAINT pk_map_segment PRIMARY KEY (tenant_id, segment),
    CONSTRAINT uq_map_segment_idx UNIQUE (tenant_id, idx),
    CONSTRAINT ck_map_segment_idx CHECK (idx > 0)
);

-- Aggregates at touchpoint granularity, per journey kind and grain (d: the UTC day of the
-- journey's first step, m: its month). Each value is a vector over the tenant's segments.
CREATE TABLE journey.map_node (
    tenant_id text NOT NULL,
    kind smallint NOT NULL,
    grain text NOT NULL,
    period date NOT NULL,
    activity text NOT NULL,
    stat text NOT NULL,
    v bigint[] NOT NULL,
    CONSTRAINT pk_map_node PRIMARY KEY (tenant_id, kind, grain, period, activity, stat),
    CONSTRAINT ck_map_node_grain CHECK (grain IN ('d', 'm'))
);

CREATE TABLE journey.map_edge (
    tenant_id text NOT NULL,
    kind smallint NOT NULL,
    grain text NOT NULL,
    period date NOT NULL,
    source text NOT NULL,
    target text NOT NULL,
    bucket smallint NOT NULL,
    n bigint[] NOT NULL,
    us bigint[] NOT NULL,
    CONSTRAINT pk_map_edge PRIMARY KEY (tenant_id, kind, grain, period, source, target, bucket),
    CONSTRAINT ck_map_edge_grain CHECK (grain IN ('d', 'm'))
);

CREATE TABLE journey.map_config (
    tenant_id text NOT NULL,
    config jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_map_config PRIMARY KEY (tenant_id)
);
"""


# Element-wise sum of two vectors (the shorter one padded with zeros). PL/pgSQL: measured
# 2.9 us a call against 5.9 us for unnest + array_agg in SQL (100,000 pairs of 14).
VEC_ADD = """
CREATE FUNCTION journey.vec_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n integer := greatest(cardinality(a), cardinality(b));
    r bigint[] := array_fill(0::bigint, ARRAY[n]);
BEGIN
    FOR i IN 1..n LOOP
        r[i] := coalesce(a[i], 0) + coalesce(b[i], 0);
    END LOOP;
    RETURN r;
END
$$
"""


def upgrade() -> None:
    # One statement at a time: asyncpg prepares each statement and refuses several at once.
    for statement in DDL.split(";"):
        body = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            op.execute(body)
    op.execute(VEC_ADD)


def downgrade() -> None:
    op.execute("DROP FUNCTION journey.vec_add(bigint[], bigint[])")
    for table in (
        "map_config",
        "map_segment",
        "map_edge",
        "map_node",
        "map_journey",
        "map_customer",
        "map_step",
        "map_pending",
    ):
        op.execute(f"DROP TABLE journey.{table}")
