"""``maintain.drain`` (the tests' wait for the map) returns only once every entry queued
before the call is folded, even when another compactor (a journey worker on the same
database) holds some of them mid-batch: finding nothing to claim is not the same as done."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.journey.maps.maintain import drain, drain_once, parts_within
from shared.db import Database, raw_connection
from tests.journey.conformance.support import BASE, MIN, Log, load
from tests.journey.maps.support import (
    apply_chunk,
    email,
    envelope,
    own_database,
    stored_totals,
)
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


def _three_customers() -> tuple[Log, Log]:
    """Three customers' first three steps, and a fourth step each, later."""
    first, late = Log(), Log()
    late._n = 100
    for c in ("c1", "c2", "c3"):
        for i, activity in enumerate(("phone:ivr", "web_chat:bot", "phone:agent")):
            first.step(c, i * MIN, activity)
        late.step(c, 10 * MIN, "email:support")
    return first, late


async def test_a_batch_holds_at_most_its_steps_budget_and_the_map_is_the_same(
    db: Database, journey_settings
):
    """``map_batch_steps``: a batch's claimed customers are read and folded in parts of at most
    that many stored steps plus queued events (the compactor's memory stays bounded, however
    long the histories), one customer at least, all in the batch's one transaction; the map is
    what an unbounded fold gives."""
    first, late = _three_customers()
    bounded, unbounded = await TenantFactory(db)(), await TenantFactory(db)()
    for tenant in (bounded, unbounded):
        await load(db, journey_settings, tenant.id, first.events)  # 3 steps stored each

    async def fold_late(tenant: str, steps: int | None) -> tuple[int, int, int]:
        items = [envelope(tenant, e, BASE, [email(tenant, e.customer)]) for e in late.events]
        await apply_chunk(db, journey_settings, items)  # a fourth step each, queued
        async with db.session() as session:
            conn = await raw_connection(session)
            outcome = await drain_once(conn, limit=500, steps=steps)
        async with db.session() as session:
            waiting = await (await raw_connection(session)).fetchval(
                "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant
            )
        return outcome.customers, outcome.parts, waiting

    # each customer: 3 stored steps and 1 queued event; 4 + 4 fit in 9, a third would not
    assert await fold_late(bounded.id, steps=9) == (3, 2, 0)
    assert await fold_late(unbounded.id, steps=None) == (3, 1, 0)
    async with db.session() as session:
        conn = await raw_connection(session)
        for kind in (0, 1):
            assert await stored_totals(conn, bounded.id, kind=kind) == await stored_totals(
                conn, unbounded.id, kind=kind
            )
        totals = await stored_totals(conn, bounded.id, kind=0)
    assert sum(totals["count"].values()) == 12


async def test_a_part_whose_write_fails_rolls_the_whole_batch_back(db: Database, journey_settings):
    """A part's rows are written while the next part is folded: when that write fails, the
    batch fails with the database's error and rolls back whole (every customer's queued events
    wait, none is half in the map), and the next batch folds them into the map that a batch
    that never failed gives."""
    first, late = _three_customers()
    failing, clean = await TenantFactory(db)(), await TenantFactory(db)()
    for tenant in (failing, clean):
        await load(db, journey_settings, tenant.id, first.events)  # (folded: the map drained)
    for tenant in (failing, clean):  # a fourth step each, queued
        items = [envelope(tenant.id, e, BASE, [email(tenant.id, e.customer)]) for e in late.events]
        await apply_chunk(db, journey_settings, items)
    async with db.session() as session:
        conn = await raw_connection(session)
        before = await stored_totals(conn, failing.id, kind=0)
        # a real write failure: the failing tenant's profiles can no longer be saved
        await conn.execute(
            f"""ALTER TABLE journey.map_customer ADD CONSTRAINT no_profile_for_failing
                CHECK (tenant_id <> '{failing.id}') NOT VALID"""
        )
    with pytest.raises(asyncpg.CheckViolationError):
        async with db.session() as session:
            await drain_once(await raw_connection(session), limit=500, steps=9)
    async with db.session() as session:
        conn = await raw_connection(session)
        waiting = await conn.fetchval(
            "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", failing.id
        )
        assert waiting == 3  # every customer's queued event, of both parts
        assert await stored_totals(conn, failing.id, kind=0) == before
        await conn.execute(
            "ALTER TABLE journey.map_customer DROP CONSTRAINT no_profile_for_failing"
        )
    await drain(db, steps=9)
    async with db.session() as session:
        conn = await raw_connection(session)
        for kind in (0, 1):
            assert await stored_totals(conn, failing.id, kind=kind) == await stored_totals(
                conn, clean.id, kind=kind
            )
        assert sum((await stored_totals(conn, failing.id, kind=0))["count"].values()) == 12


def test_parts_keep_the_queue_order_and_a_customer_over_the_budget_alone():
    a, b, c, d = ((f"t{i}", uuid.UUID(int=i)) for i in range(4))
    assert parts_within([a, b, c], [4, 4, 4], 9) == [[a, b], [c]]
    assert parts_within([a, b, c, d], [20, 1, 1, 30], 9) == [[a], [b, c], [d]]
    assert parts_within([a, b], [4, 4], 1) == [[a], [b]]
    assert parts_within([a, b, c], [3, 3, 3], 9) == [[a, b, c]]
