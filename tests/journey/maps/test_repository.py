"""The map's batched writes store exactly what they are given (values the SQL encodes by hand:
array literals of activities, whatever their text)."""

from __future__ import annotations

import uuid

from services.journey.maps import repository as repo
from shared.db import Database, raw_connection
from tests.journey.maps.support import new_tenant

AWKWARD = ('say "hi"', "back\\slash", "a,b", "{braces}", "NULL", " spaced ", "ünï", "x")


async def test_journeys_written_in_one_statement_read_back_as_given(db: Database):
    tenant, customer = new_tenant(), uuid.uuid4()
    first = (20_000, 3, AWKWARD[:3], (1, 2, 3), ("25-34", None, "vip", None, "0-30d"))
    other = (20_001, len(AWKWARD), AWKWARD, tuple(range(len(AWKWARD))), (None,) * 5)
    async with db.session() as session:
        conn = await raw_connection(session)
        async with conn.transaction():
            await repo.save_journeys(
                conn, [((tenant, customer, 0, ""), first), ((tenant, customer, 1, "e:1"), other)]
            )
            changed = (20_002, 1, ("NULL",), (7,), first[4])
            await repo.save_journeys(conn, [((tenant, customer, 0, ""), changed)])
            rows = await conn.fetch(
                """SELECT kind, journey_key, day - date '1970-01-01', steps, activities,
                          times_us, age_group, region, tier, lifecycle_stage, tenure,
                          start_at = timestamptz 'epoch' + times_us[1] * interval '1 microsecond'
                   FROM journey.map_journey WHERE tenant_id = $1 ORDER BY kind""",
                tenant,
            )
            await conn.execute("DELETE FROM journey.map_journey WHERE tenant_id = $1", tenant)
    got = [
        (r[0], r[1], (r[2], r[3], tuple(r[4]), tuple(r[5]), tuple(r[6:11])), r[11]) for r in rows
    ]
    assert got == [(0, "", changed, True), (1, "e:1", other, True)]
