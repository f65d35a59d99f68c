"""journey: survey responses counted by day, kind and score (the health summary's experience)

Revision ID: journey_0010
Revises: journey_0009
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0010"
down_revision = "journey_0009"
branch_labels = None
depends_on = None

# Kept where events are stored and erased (services/journey/experience/counts.py); filled here
# from the stored responses that count (a csat, nps or ces survey with a numeric score).
DDL = [
    """CREATE TABLE journey.experience_survey_day (
           tenant_id text NOT NULL,
           day date NOT NULL,
           kind text NOT NULL,
           score double precision NOT NULL,
           n bigint NOT NULL,
           CONSTRAINT pk_experience_survey_day PRIMARY KEY (tenant_id, day, kind, score)
       )""",
    """INSERT INTO journey.experience_survey_day
       SELECT tenant_id, (time AT TIME ZONE 'UTC')::date, envelope -> 'data' ->> 'survey',
              (envelope -> 'data' ->> 'score')::float8, count(*)
       FROM journey.event
       WHERE type = 'survey.responded'
         AND envelope -> 'data' ->> 'survey' IN ('csat', 'nps', 'ces')
         AND jsonb_typeof(envelope -> 'data' -> 'score') = 'number'
       GROUP BY 1, 2, 3, 4""",
]


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE journey.experience_survey_day")
