"""journey: pain-point day counts (journey quality's fast path for pain points and health)

Revision ID: journey_0008
Revises: journey_0007
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0008"
down_revision = "journey_0007"
branch_labels = None
depends_on = None

# Steps counted by UTC day, activity, edge source ('' when none), channel, contact, stat and
# value (services/journey/quality/rules.py pain_cells), kept by the map compactor with the
# quality rows; (tenant_id, at_us) finds a pain point's latest example without a range scan.
DDL = [
    """CREATE TABLE journey.quality_pain_day (
           tenant_id text NOT NULL,
           day date NOT NULL,
           activity text NOT NULL,
           prev_activity text NOT NULL,
           channel text NOT NULL,
           contact boolean NOT NULL,
           stat text NOT NULL,
           value text NOT NULL,
           n bigint NOT NULL,
           CONSTRAINT pk_quality_pain_day PRIMARY KEY (tenant_id, day, activity, prev_activity,
                                                       channel, contact, stat, value)
       )""",
    "CREATE INDEX ix_quality_step_at ON journey.quality_step (tenant_id, at_us)",
    # existing quality rows, counted as rules.pain_cells counts them
    """INSERT INTO journey.quality_pain_day
       SELECT tenant_id, day, activity, coalesce(prev_activity, ''), channel, contact, stat,
              value, sum(n)::bigint
       FROM journey.quality_step q CROSS JOIN LATERAL (VALUES
           ('rows', '', 1),
           ('abandon', q.abandon_at, CASE WHEN q.abandon_at IS NOT NULL THEN 1 END),
           ('abandon_wait', '', CASE WHEN q.abandon_at IS NOT NULL AND q.abandon_wait_ms <> 0
                                     THEN q.abandon_wait_ms END),
           ('transfer', '1', CASE WHEN q.transfers >= 1 THEN 1 END),
           ('transfer', '2', CASE WHEN q.transfers >= 2 THEN 1 END),
           ('sentiment', '', CASE WHEN q.sentiment_milli IS NOT NULL THEN 1 END),
           ('negative', '', CASE WHEN q.sentiment_milli <= -300 THEN 1 END),
           ('wait', CASE WHEN q.queue_wait_ms < 1 THEN '0'
                         ELSE (1 + floor(8 * log(2, q.queue_wait_ms::numeric)))::int::text END,
                    CASE WHEN q.queue_wait_ms IS NOT NULL THEN 1 END),
           ('long', '', CASE WHEN q.queue_wait_ms > 300000 THEN 1 END),
           ('callback', '', CASE WHEN q.callback <> 0 THEN 1 END),
           ('callback_missed', '', CASE WHEN q.callback = 2 THEN 1 END),
           ('episode_end', '', CASE WHEN q.episode_end THEN 1 END),
           ('cross_unresolved', '', CASE WHEN q.cross_unresolved THEN 1 END)
       ) AS s(stat, value, n)
       WHERE s.n IS NOT NULL
       GROUP BY 1, 2, 3, 4, 5, 6, 7, 8""",
]


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP INDEX journey.ix_quality_step_at")
    op.execute("DROP TABLE journey.quality_pain_day")
