"""journey: designed journeys; an index for surveys and feedback (experience, feedback on steps)

Revision ID: journey_0005
Revises: journey_0004
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0005"
down_revision = "journey_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE journey.designed_journey (
               tenant_id text NOT NULL,
               name text NOT NULL,
               version integer NOT NULL,
               definition jsonb NOT NULL,
               created_at timestamptz NOT NULL DEFAULT now(),
               updated_at timestamptz NOT NULL DEFAULT now(),
               CONSTRAINT pk_designed_journey PRIMARY KEY (tenant_id, name)
           )"""
    )
    # Experience and feedback read survey and feedback events by tenant and time; a partial
    # index keeps that cheap without touching the write path of other events.
    op.execute(
        """CREATE INDEX ix_event_experience ON journey.event (tenant_id, type, time)
           WHERE type IN ('survey.responded', 'feedback.submitted')"""
    )


def downgrade() -> None:
    op.execute("DROP INDEX journey.ix_event_experience")
    op.execute("DROP TABLE journey.designed_journey")
