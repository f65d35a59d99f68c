"""``maintain.drain`` (the tests' wait for the map) returns only once every entry queued
before the call is folded, even when another compactor (a journey worker on the same
database) holds some of them mid-batch: finding nothing to claim is not the same as done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.journey.maps.maintain import drain, drain_once
from shared.db import Database, raw_connection
from tests.journey.conformance.support import BASE, MIN, Log, load
from tests.journey.maps.support import apply_chunk, email, envelope, own_database
from tests.support import TenantFactory


@pytest.fixture(scope="module")
async def db(journey_settings) -> AsyncIterator[Database]:
    """This module's own database, not the session's: no compactor folds its map queue behind
    the test's back (the session's journey workers fold the shared queue, and at once)."""
    async with own_database(journey_settings.dsn) as (database, _):
        yield database


async def test_drain_waits_for_entries_another_compactor_holds(db: Database, journey_settings):
    tenant = await TenantFactory(db)()
    log = Log()
    log.step("c1", 0, "phone:ivr")
    await load(db, journey_settings, tenant.id, log.events)
    late = Log()
    late._n = 100
    late.step("c1", 30 * MIN, "phone:agent")
    items = [envelope(tenant.id, e, BASE, [email(tenant.id, e.customer)]) for e in late.events]
    await apply_chunk(db, journey_settings, items)
    async with db.session() as session:  # another compactor, mid-batch: claimed, not committed
        assert (await drain_once(await raw_connection(session), limit=500)).customers >= 1
        waiting = asyncio.create_task(drain(db))
        done, _ = await asyncio.wait({waiting}, timeout=1.0)
        assert not done, "drain returned while entries it was called for were being folded"
    await waiting
    async with db.session() as session:
        conn = await raw_connection(session)
        steps = await conn.fetchval(
            "SELECT count(*) FROM journey.map_step WHERE tenant_id = $1", tenant.id
        )
        pending = await conn.fetchval(
            "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant.id
        )
    assert (steps, pending) == (2, 0)
