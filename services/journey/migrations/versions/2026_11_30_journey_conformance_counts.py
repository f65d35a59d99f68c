"""journey: conformance counts (designed vs real journeys' fast path)

Revision ID: journey_0011
Revises: journey_0010
Create Date: 2026-11-30
"""

from alembic import op

revision = "journey_0011"
down_revision = "journey_0010"
branch_labels = None
depends_on = None

# conformance_state: which version of a designed journey (and which stage mapping, in
# ``fingerprint``) the counts of conformance_day were computed for, and for which journey kind.
# No row, or a row that does not match the design, means "not counted": reads compute on the
# fly (services/journey/conformance/counts.py). Designs saved before this migration have no row
# until they are saved again or ``waypoint rebuild-maps`` runs.
# conformance_day: per day ('d') and month ('m') of the journeys' start, a stat (``n``, ``out``,
# ``ok``, ``f:<fitness>``, ``d:<kind>:<step>``, ``o:<kind>:<step>``) counted over the map's
# segment rows (journey.map_segment positions, [1] = all), kept by the map compactor.
DDL = [
    """CREATE TABLE journey.conformance_state (
           tenant_id text NOT NULL,
           name text NOT NULL,
           version integer NOT NULL,
           kind smallint NOT NULL,
           fingerprint text NOT NULL,
           counted_at timestamptz NOT NULL DEFAULT now(),
           CONSTRAINT pk_conformance_state PRIMARY KEY (tenant_id, name),
           CONSTRAINT fk_conformance_state_design FOREIGN KEY (tenant_id, name)
               REFERENCES journey.designed_journey (tenant_id, name) ON DELETE CASCADE
       )""",
    """CREATE TABLE journey.conformance_day (
           tenant_id text NOT NULL,
           name text NOT NULL,
           grain text NOT NULL,
           period date NOT NULL,
           stat text NOT NULL,
           v bigint[] NOT NULL,
           CONSTRAINT pk_conformance_day PRIMARY KEY (tenant_id, name, grain, period, stat),
           CONSTRAINT fk_conformance_day_state FOREIGN KEY (tenant_id, name)
               REFERENCES journey.conformance_state (tenant_id, name) ON DELETE CASCADE
       )""",
]


def upgrade() -> None:
    for statement in DDL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE journey.conformance_day")
    op.execute("DROP TABLE journey.conformance_state")
