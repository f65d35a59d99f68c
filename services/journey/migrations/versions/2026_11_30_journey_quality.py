"""journey: journey quality (a quality row per map step, FCR day counts, the FCR policy)

Revision ID: journey_0006
Revises: journey_0005
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0006"
down_revision = "journey_0005"
branch_labels = None
depends_on = None

DDL = """
-- One row per step of the map's step log: what pain points and FCR read (services/journey/
-- quality/rules.py QRow), written by the map compactor with the step log.
CREATE TABLE journey.quality_step (
    tenant_id text NOT NULL,
    customer_id uuid NOT NULL,
    step_key text NOT NULL,
    at_us bigint NOT NULL,
    day date NOT NULL,
    activity text NOT NULL,
    prev_activity text,
    channel text NOT NULL,
    contact boolean NOT NULL,
    reason text,
    team text,
    age_group text,
    region text,
    tier text,
    lifecycle_stage text,
    tenure text,
    resolved boolean,
    transfers integer NOT NULL,
    abandon_at text,
    abandon_wait_ms bigint NOT NULL,
    queue_wait_ms bigint,
    sentiment_milli integer,
    callback smallint NOT NULL,
    next_any_us bigint,
    next_same_us bigint,
    reopen_us bigint,
    episode text NOT NULL,
    episode_end boolean NOT NULL,
    cross_unresolved boolean NOT NULL,
    CONSTRAINT pk_quality_step PRIMARY KEY (tenant_id, customer_id, step_key)
);
CREATE INDEX ix_quality_step_day ON journey.quality_step (tenant_id, day);

-- Contacts counted by UTC day, FCR mode (same reason?, reopens?), reason, activity, team,
-- agent-declared resolution and the smallest ladder window holding the gap to the further
-- contact (services/journey/quality/rules.py fcr_cells): the FCR report's fast path.
CREATE TABLE journey.quality_fcr_day (
    tenant_id text NOT NULL,
    day date NOT NULL,
    mode smallint NOT NULL,
    reason text NOT NULL,
    activity text NOT NULL,
    team text NOT NULL,
    declared smallint NOT NULL,
    threshold smallint NOT NULL,
    n bigint NOT NULL,
    CONSTRAINT pk_quality_fcr_day PRIMARY KEY (tenant_id, mode, day, reason, activity, team,
                                               declared, threshold)
);

CREATE TABLE journey.quality_fcr_policy (
    tenant_id text NOT NULL,
    policy jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_quality_fcr_policy PRIMARY KEY (tenant_id)
)
"""


def upgrade() -> None:
    for statement in DDL.split(";"):
        body = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            op.execute(body)


def downgrade() -> None:
    op.execute("DROP TABLE journey.quality_fcr_policy")
    op.execute("DROP TABLE journey.quality_fcr_day")
    op.execute("DROP TABLE journey.quality_step")
