"""journey: pain-point examples by day; the queue-wait histogram cells without edge source

Revision ID: journey_0009
Revises: journey_0008
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0009"
down_revision = "journey_0008"
branch_labels = None
depends_on = None

# The latest affected step (its example text, ordered bytewise) per UTC day, activity and kind
# (services/journey/quality/rules.py examples), kept by the map compactor with the quality
# rows: a pain-point row's example without walking the quality rows. The queue-wait histogram
# cells (stat 'wait') lose the edge source nobody reads (rules.pain_cells).
DDL = [
    """CREATE TABLE journey.quality_pain_example (
           tenant_id text NOT NULL,
           day date NOT NULL,
           activity text NOT NULL,
           channel text NOT NULL,
           kind text NOT NULL,
           example text COLLATE "C" NOT NULL,
           CONSTRAINT pk_quality_pain_example PRIMARY KEY (tenant_id, day, activity, kind)
       )""",
    """WITH moved AS (
           DELETE FROM journey.quality_pain_day WHERE stat = 'wait' AND prev_activity <> ''
           RETURNING *)
       INSERT INTO journey.quality_pain_day AS f
       SELECT tenant_id, day, activity, '', channel, contact, stat, value, sum(n)::bigint
       FROM moved GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
       ON CONFLICT (tenant_id, day, activity, prev_activity, channel, contact, stat, value)
       DO UPDATE SET n = f.n + excluded.n""",
    # existing quality rows' examples (as repository.EXAMPLES_SQL, frozen here)
    """INSERT INTO journey.quality_pain_example (tenant_id, day, activity, channel, kind, example)
       SELECT tenant_id, day, activity, min(channel), kind, max(x COLLATE "C")
       FROM (
           SELECT q.tenant_id, q.day, q.activity, q.channel,
                  lpad(q.at_us::text, 20, '0') || chr(31) || q.customer_id::text || chr(31) ||
                  q.episode || chr(31) || q.step_key AS x,
                  q.abandon_at, q.callback, q.cross_unresolved, q.transfers, q.sentiment_milli,
                  q.queue_wait_ms, q.contact, q.reason, q.next_any_us, q.next_same_us,
                  q.reopen_us
           FROM journey.quality_step q
       ) s CROSS JOIN LATERAL (
           SELECT 'abandon' WHERE s.abandon_at IS NOT NULL
           UNION ALL SELECT 'callback_not_completed' WHERE s.callback = 2
           UNION ALL SELECT 'cross_channel_unresolved' WHERE s.cross_unresolved
           UNION ALL SELECT 'transfer_chain' WHERE s.transfers >= 2
           UNION ALL SELECT 'negative_sentiment' WHERE s.sentiment_milli <= -300
           UNION ALL SELECT 'long_wait' WHERE s.queue_wait_ms > 300000
           UNION ALL SELECT 'transfer' WHERE s.transfers >= 1
           UNION ALL
           SELECT 'r:' || m.mode || ':' || t.i || ':' || coalesce(s.reason, '')
           FROM (VALUES (0, s.next_any_us), (1, s.next_same_us),
                        (2, least(s.next_any_us, s.reopen_us)),
                        (3, least(s.next_same_us, s.reopen_us))) AS m(mode, gap)
           CROSS JOIN LATERAL (
               SELECT min(l.i - 1) AS i
               FROM unnest(ARRAY[1, 2, 3, 5, 7, 10, 14, 21, 28, 30, 35, 42, 45, 60, 90, 120, 180,
                                 270, 365, 400]::bigint[]) WITH ORDINALITY AS l(d, i)
               WHERE m.gap <= l.d * 86400000000) t
           WHERE s.contact AND t.i IS NOT NULL
       ) AS k(kind)
       GROUP BY tenant_id, day, activity, kind""",
]


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE journey.quality_pain_example")
