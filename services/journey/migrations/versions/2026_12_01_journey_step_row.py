"""journey: one row per step — the step log and the step's quality facts together

The map compactor wrote each step twice: its summary in ``map_step`` and its quality facts in
``quality_step`` (same key, written in the same transaction from the same fold). Two heap rows,
two primary keys and two staged upserts per step were about half of the compactor's PostgreSQL
time. ``map_step`` now holds the quality columns (services/journey/quality/rules.py ``QRow``);
``quality_step`` is gone. The columns nobody read (``at``, ``event_id``, ``department``,
``events``: all in the summary) are dropped. Quality columns stay nullable: a step stored
before journey_0006 had no quality row, and has none here until ``waypoint rebuild-maps``
(every range filter of the quality reads leaves such a step out, as before).

Revision ID: journey_0013
Revises: journey_0012
Create Date: 2026-12-01
"""

from alembic import op

revision = "journey_0013"
down_revision = "journey_0012"
branch_labels = None
depends_on = None

QUALITY = (
    ("at_us", "bigint"),
    ("day", "date"),
    ("prev_activity", "text"),
    ("channel", "text"),
    ("contact", "boolean"),
    ("reason", "text"),
    ("team", "text"),
    ("age_group", "text"),
    ("region", "text"),
    ("tier", "text"),
    ("lifecycle_stage", "text"),
    ("tenure", "text"),
    ("resolved", "boolean"),
    ("transfers", "integer"),
    ("abandon_at", "text"),
    ("abandon_wait_ms", "bigint"),
    ("queue_wait_ms", "bigint"),
    ("sentiment_milli", "integer"),
    ("callback", "smallint"),
    ("next_any_us", "bigint"),
    ("next_same_us", "bigint"),
    ("reopen_us", "bigint"),
    ("episode", "text"),
    ("episode_end", "boolean"),
    ("cross_unresolved", "boolean"),
)
NAMES = [name for name, _ in QUALITY]
KEY = "x.tenant_id = q.tenant_id AND x.customer_id = q.customer_id AND x.step_key = q.step_key"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE journey.map_step "
        + ", ".join(f"ADD COLUMN {name} {kind}" for name, kind in QUALITY)
    )
    op.execute(
        f"""UPDATE journey.map_step x SET {", ".join(f"{n} = q.{n}" for n in NAMES)}
            FROM journey.quality_step q WHERE {KEY}"""  # noqa: S608 - fixed names
    )
    op.execute("DROP TABLE journey.quality_step")
    op.execute(
        "ALTER TABLE journey.map_step DROP COLUMN at, DROP COLUMN event_id, "
        "DROP COLUMN department, DROP COLUMN events"
    )
    op.execute("CREATE INDEX ix_map_step_day ON journey.map_step (tenant_id, day)")
    op.execute("CREATE INDEX ix_map_step_at ON journey.map_step (tenant_id, at_us)")


def downgrade() -> None:
    op.execute(
        """CREATE TABLE journey.quality_step (
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
           ) WITH (fillfactor = 70)"""
    )
    columns = ", ".join(["tenant_id", "customer_id", "step_key", "activity", *NAMES])
    op.execute(
        f"""INSERT INTO journey.quality_step ({columns})
            SELECT {columns} FROM journey.map_step WHERE at_us IS NOT NULL"""  # noqa: S608
    )
    op.execute("CREATE INDEX ix_quality_step_day ON journey.quality_step (tenant_id, day)")
    op.execute("CREATE INDEX ix_quality_step_at ON journey.quality_step (tenant_id, at_us)")
    op.execute("DROP INDEX journey.ix_map_step_day")
    op.execute("DROP INDEX journey.ix_map_step_at")
    op.execute(
        """ALTER TABLE journey.map_step ADD COLUMN at timestamptz, ADD COLUMN event_id text,
               ADD COLUMN department text, ADD COLUMN events integer"""
    )
    op.execute(
        """UPDATE journey.map_step SET
               at = timestamptz 'epoch' + (summary ->> 't')::bigint * interval '1 microsecond',
               event_id = summary ->> 'e', department = summary -> 'l' -> 'department' ->> 2,
               events = (summary ->> 'n')::integer"""
    )
    op.execute(
        "ALTER TABLE journey.map_step "
        + ", ".join(f"DROP COLUMN {name}" for name in NAMES)
        + ", ALTER COLUMN at SET NOT NULL, ALTER COLUMN event_id SET NOT NULL, "
        "ALTER COLUMN events SET NOT NULL"
    )
