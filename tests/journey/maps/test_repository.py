"""The map's writes: exactly what they are given (the journeys' activities as text arrays through
the binary COPY stage, whatever their text), and nothing for events that change nothing."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.journey.config import JourneySettings
from services.journey.maps import repository as repo
from services.journey.maps.maintain import drain
from shared.db import Database, raw_connection
from tests.journey.conformance.support import BASE
from tests.journey.maps.reference import Ev
from tests.journey.maps.support import (
    apply_chunk,
    email,
    envelope,
    new_tenant,
    own_database,
    snapshot,
)

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


async def _stored(conn: asyncpg.Connection, tenant: str) -> tuple[Any, ...]:
    """The tenant's whole map as stored, quality rows and the profile's write time included."""
    quality = await conn.fetch(
        "SELECT * FROM journey.map_step WHERE tenant_id = $1 ORDER BY step_key", tenant
    )
    written = await conn.fetch(
        "SELECT customer_id, updated_at FROM journey.map_customer WHERE tenant_id = $1", tenant
    )
    return await snapshot(conn, tenant), [tuple(r) for r in quality], sorted(map(tuple, written))


async def test_events_that_change_no_step_and_not_the_profile_leave_the_map_as_stored(
    db: Database, journey_settings: JourneySettings
):
    tenant = new_tenant()
    async with own_database(journey_settings.dsn) as (own, _):
        who = [email(tenant, "c")]
        hour = 3_600_000_000
        first = [
            Ev("t1", "identity.linked", 0, {"traits": {"tier": "vip", "region": "emea"}}),
            Ev("s1", "contact.started", hour, {"interaction_id": "i1", "channel": "phone"}),
            Ev("s2", "marketing.touched", 2 * hour, {"channel": "email"}),
            Ev("t2", "identity.linked", 5 * hour, {"traits": {"tier": "premium"}}),
        ]
        await apply_chunk(own, journey_settings, [envelope(tenant, e, BASE, who) for e in first])
        await drain(own)
        async with own.session() as session:
            before = await _stored(await raw_connection(session), tenant)

        # an identifier link without traits, and a trait older than the stored one: no step,
        # the same first-seen time, the same latest traits
        nothing = [
            Ev("n1", "identity.linked", 3 * hour, {}),
            Ev("n2", "identity.linked", 4 * hour, {"traits": {"tier": "standard"}}),
        ]
        await apply_chunk(own, journey_settings, [envelope(tenant, e, BASE, who) for e in nothing])
        await drain(own)
        async with own.session() as session:
            conn = await raw_connection(session)
            assert await _stored(conn, tenant) == before  # not even rewritten
            assert not await conn.fetchval(
                "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant
            )

        # a later trait does change the customer's segment: folded as before
        later = [Ev("n3", "identity.linked", 6 * hour, {"traits": {"tier": "standard"}})]
        await apply_chunk(own, journey_settings, [envelope(tenant, e, BASE, who) for e in later])
        await drain(own)
        async with own.session() as session:
            conn = await raw_connection(session)
            after = await _stored(conn, tenant)
            tiers = await conn.fetch(
                "SELECT DISTINCT tier FROM journey.map_journey WHERE tenant_id = $1", tenant
            )
        assert after[0]["map_customer"] != before[0]["map_customer"]
        assert [r[0] for r in tiers] == ["standard"]
