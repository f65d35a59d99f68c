"""The compactor's settle delay: a customer is claimed once its newest queued event is
``settle`` seconds old (a burst is folded in one visit), or once its oldest has waited ``cap``
(a steady stream is not starved); ``drain`` (settle 0) folds everything at once. Time passing
is the queue's ``enqueued_at`` moved back, not a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.journey.maps import repository as repo
from services.journey.maps.maintain import Compactor, drain, drain_once, pause_after
from services.journey.maps.rebuild import rebuild_from_events
from shared.db import Database, raw_connection
from tests.journey.conformance.support import BASE, MIN, Log
from tests.journey.maps.support import apply_chunk, email, envelope, own_database, snapshot
from tests.support import TenantFactory, eventually

SETTLE, CAP = 60.0, 600.0  # seconds; far longer than a test step takes


@pytest.fixture(scope="module")
async def db(journey_settings) -> AsyncIterator[Database]:
    """This module's own database, not the session's: no compactor folds its map queue behind
    the test's back (the session's journey workers fold the shared queue, and at once)."""
    async with own_database(journey_settings.dsn) as (database, _):
        yield database


async def _queue(db: Database, settings, tenant: str, log: Log) -> None:
    items = [envelope(tenant, e, BASE, [email(tenant, e.customer)]) for e in log.events]
    await apply_chunk(db, settings, items)
    log.events.clear()


async def _age(db: Database, tenant: str, seconds: float, *, newest_too: bool = True) -> None:
    """Move the tenant's queue entries ``seconds`` into the past (all, or all but the newest)."""
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute(
            """UPDATE journey.map_pending
               SET enqueued_at = enqueued_at - make_interval(secs => $2)
               WHERE tenant_id = $1 AND ($3 OR seq < (
                   SELECT max(seq) FROM journey.map_pending WHERE tenant_id = $1))""",
            tenant,
            seconds,
            newest_too,
        )


async def _claimed(
    db: Database, tenant: str, *, settle: float, cap: float, limit: int = 20_000
) -> set[str]:
    """The tenant's customers a claim of ``limit`` takes now."""
    async with db.session() as session:
        keys = await repo.claim(await raw_connection(session), limit, settle=settle, cap=cap)
    return {str(c) for t, c in keys if t == tenant}


async def _customers(db: Database, tenant: str) -> set[str]:
    async with db.session() as session:
        rows = await (await raw_connection(session)).fetch(
            "SELECT DISTINCT customer_id FROM journey.map_pending WHERE tenant_id = $1", tenant
        )
    return {str(r[0]) for r in rows}


async def _pending(conn: asyncpg.Connection, tenant: str) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant)
    )


async def test_a_burst_is_folded_in_one_visit_once_it_settles(db: Database, journey_settings):
    tenant = (await TenantFactory(db)()).id
    log = Log()
    log.step("c1", 0, "phone:ivr")
    await _queue(db, journey_settings, tenant, log)
    log.step("c1", 30 * MIN, "web_chat")
    log.step("c1", 60 * MIN, "phone:agent")
    await _queue(db, journey_settings, tenant, log)  # a second chunk: the customer is live
    (customer,) = await _customers(db, tenant)
    assert customer not in await _claimed(db, tenant, settle=SETTLE, cap=CAP)
    await _age(db, tenant, 2 * SETTLE)
    assert customer in await _claimed(db, tenant, settle=SETTLE, cap=CAP)
    async with db.session() as session:  # one visit: a drain_once folds a customer once
        conn = await raw_connection(session)
        outcome = await drain_once(conn, limit=20_000, settle=SETTLE, cap=CAP)
        assert outcome.events >= 3
        assert await _pending(conn, tenant) == 0
    async with db.session() as session:
        conn = await raw_connection(session)
        steps = await conn.fetchval(
            "SELECT count(*) FROM journey.map_step WHERE tenant_id = $1", tenant
        )
        assert steps == 3
        before = await snapshot(conn, tenant)
    async with db.session() as session:  # exact: the map a rebuild from the events gives
        await rebuild_from_events(await raw_connection(session), tenant)
    async with db.session() as session:
        assert await snapshot(await raw_connection(session), tenant) == before


async def test_a_customer_whose_events_never_pause_is_folded_after_the_cap(
    db: Database, journey_settings
):
    tenant = (await TenantFactory(db)()).id
    log = Log()
    log.step("c1", 0, "phone:ivr")
    await _queue(db, journey_settings, tenant, log)
    log.step("c1", 30 * MIN, "web_chat")
    await _queue(db, journey_settings, tenant, log)
    (customer,) = await _customers(db, tenant)
    await _age(db, tenant, CAP + SETTLE, newest_too=False)  # the newest entry stays fresh
    assert customer in await _claimed(db, tenant, settle=SETTLE, cap=CAP)
    assert customer not in await _claimed(db, tenant, settle=SETTLE, cap=10 * CAP)


async def test_drain_folds_what_has_not_settled(db: Database, journey_settings):
    tenant = (await TenantFactory(db)()).id
    log = Log()
    log.step("c1", 0, "phone:ivr")
    await _queue(db, journey_settings, tenant, log)
    (customer,) = await _customers(db, tenant)
    assert customer not in await _claimed(db, tenant, settle=SETTLE, cap=CAP)
    await drain(db)
    async with db.session() as session:
        assert await _pending(await raw_connection(session), tenant) == 0


async def _alone_in_the_queue(db: Database, settings, customers: int, steps: int) -> str:
    """A new tenant whose ``customers`` have ``steps`` steps each queued, the queue's only
    entries; returns the tenant."""
    await drain(db)
    tenant = (await TenantFactory(db)()).id
    log = Log()
    for c in range(customers):
        for n in range(steps):
            log.step(f"c{c}", n * MIN, "phone:ivr" if n % 2 else "web_chat")
    await _queue(db, settings, tenant, log)
    return tenant


async def test_a_batch_fills_up_with_customers_of_a_dozen_events_each(
    db: Database, journey_settings
):
    tenant = await _alone_in_the_queue(db, journey_settings, customers=10, steps=12)
    assert len(await _customers(db, tenant)) == 10
    claimed = await _claimed(db, tenant, settle=0.0, cap=0.0, limit=10)
    assert len(claimed) == 10  # a batch of 10 takes all ten, not the few the first 40 entries name
    await drain(db)


def test_the_compactor_pauses_between_batches_only_while_it_keeps_up() -> None:
    pause = {"limit": 2000, "poll": 0.2, "interval": 2.0}
    assert pause_after(0, elapsed=0.1, **pause) == 0.2  # idle: the poll
    assert pause_after(2000, elapsed=0.5, **pause) == 0.0  # a full batch, a backlog: fold on
    assert pause_after(300, elapsed=0.5, **pause) == 1.5  # keeping up: the interval's rest
    assert pause_after(300, elapsed=3.0, **pause) == 0.0
    assert pause_after(300, elapsed=0.5, limit=2000, poll=0.2, interval=0.0) == 0.0


async def test_a_backlog_is_folded_batch_after_batch_whatever_the_interval(
    db: Database, journey_settings
):
    tenant = await _alone_in_the_queue(db, journey_settings, customers=5, steps=1)
    settings = journey_settings.model_copy(
        update={
            "map_batch_customers": 2,
            "map_batch_interval_seconds": 600.0,
            "map_settle_seconds": 0.0,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(Compactor(db, settings).run(stop))
    try:

        async def folded() -> bool:
            async with db.session() as session:
                return await _pending(await raw_connection(session), tenant) == 0

        # batches of 2, 2 and 1: the full ones are followed at once (a pause of the interval
        # after each would take 20 minutes); the partial last one then pauses
        assert await eventually(folded, timeout=60)
    finally:
        stop.set()
        await task
