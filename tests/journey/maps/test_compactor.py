"""The compactor while backlogged: the next batch claims and folds while a full one writes its
aggregate changes and commits. The next claim leaves the first batch's customers out; the map
is the one a rebuild gives, and the batches' parts are counted; a batch whose aggregate write
fails (the next one beside it) is counted, rolls back whole and is retried; a batch's duration
metric leaves out its wait for the batch before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.journey.maps import repository as repo
from services.journey.maps.maintain import Compactor, drain
from services.journey.maps.rebuild import rebuild_from_events
from shared.db import Database, raw_connection
from tests.journey.conformance.support import BASE, MIN, Log
from tests.journey.maps.support import apply_chunk, email, envelope, own_database, snapshot
from tests.support import TenantFactory, eventually, sample

ACTIVITIES = ("phone:ivr", "web_chat:bot", "phone:agent", "email:support")


@pytest.fixture(scope="module")
async def db(journey_settings) -> AsyncIterator[Database]:
    """This module's own database: no other compactor folds its queue behind the test's back."""
    async with own_database(journey_settings.dsn) as (database, _):
        yield database


async def _queued(db: Database, settings, steps: dict[str, int]) -> str:
    """A new tenant whose customers (name → number of steps) have their steps queued, the
    queue's only entries; returns the tenant."""
    await drain(db)
    tenant = (await TenantFactory(db)()).id
    log = Log()
    for customer, n in steps.items():
        for i in range(n):
            log.step(customer, i * 3 * MIN, ACTIVITIES[(i + len(customer)) % 4])
    items = [envelope(tenant, e, BASE, [email(tenant, e.customer)]) for e in log.events]
    await apply_chunk(db, settings, items)
    return tenant


async def _pending(db: Database, tenant: str) -> int:
    async with db.session() as session:
        conn = await raw_connection(session)
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant
            )
        )


async def _folded(db: Database, tenant: str) -> None:
    """Wait until the tenant's queue is empty."""

    async def empty() -> bool:
        return await _pending(db, tenant) == 0

    assert await eventually(empty, timeout=60)


async def _as_rebuilt(db: Database, tenant: str) -> dict[str, list[tuple[Any, ...]]]:
    """The tenant's map, checked equal to what a rebuild from its events gives."""
    async with db.session() as session:
        conn = await raw_connection(session)
        compacted = await snapshot(conn, tenant)
        await rebuild_from_events(conn, tenant)
        assert await snapshot(conn, tenant) == compacted
    return compacted


def _sample(name: str, **labels: str) -> float:
    return sample(f"waypoint_journey_map_{name}", **labels)


async def test_the_next_claim_leaves_out_the_customers_of_the_batch_still_committing(
    db: Database, journey_settings
):
    # c0's 20 entries fill a one-customer claim's window (16 entries) on their own
    tenant = await _queued(db, journey_settings, {"c0": 20, "c1": 1})
    async with db.session() as first:  # a batch that has claimed c0 and not committed
        (claimed,) = await repo.claim(await raw_connection(first), 1)
        async with db.session() as second:
            conn = await raw_connection(second)
            assert await repo.claim(conn, 1) == []  # c0 is locked; its entries fill the window
            (other,) = await repo.claim(conn, 1, busy=[claimed[1]])
    assert claimed[0] == other[0] == tenant
    assert other[1] != claimed[1]
    await drain(db)


async def test_overlapping_batches_give_the_map_a_rebuild_gives(db: Database, journey_settings):
    tenant = await _queued(db, journey_settings, {f"c{i}": 2 + i % 4 for i in range(12)})
    settings = journey_settings.model_copy(
        update={"map_batch_customers": 2, "map_batch_steps": 4, "map_settle_seconds": 0.0}
    )
    batches, parts = _sample("batch_parts_count"), _sample("batch_parts_sum")
    stop = asyncio.Event()
    task = asyncio.create_task(Compactor(db, settings).run(stop))
    try:
        await _folded(db, tenant)
    finally:
        stop.set()
        await task
    compacted = await _as_rebuilt(db, tenant)
    assert len(compacted["map_step"]) == sum(2 + i % 4 for i in range(12))
    # 2 customers of 2-5 steps each against a 4-step bound: some batches were cut in parts
    assert _sample("batch_parts_count") - batches >= 6
    assert _sample("batch_parts_sum") - parts > _sample("batch_parts_count") - batches


async def test_a_failed_batch_is_retried_and_the_map_is_exact(db: Database, journey_settings):
    tenant = await _queued(db, journey_settings, {f"c{i}": 3 for i in range(7)})
    queued = await _pending(db, tenant)
    settings = journey_settings.model_copy(
        update={"map_batch_customers": 2, "map_settle_seconds": 0.0}
    )
    async with db.session() as session:  # a real failure: the tenant's aggregates cannot be written
        await (await raw_connection(session)).execute(
            f"""ALTER TABLE journey.map_node ADD CONSTRAINT no_node_for_failing
                CHECK (tenant_id <> '{tenant}') NOT VALID"""
        )
    before = _sample("failures_total", cause="CheckViolationError")
    stop = asyncio.Event()
    task = asyncio.create_task(Compactor(db, settings).run(stop))
    try:

        async def failed_twice() -> bool:
            return _sample("failures_total", cause="CheckViolationError") >= before + 2

        assert await eventually(failed_twice, timeout=60)
        assert await _pending(db, tenant) == queued  # every failed batch rolled back whole
        async with db.session() as session:
            await (await raw_connection(session)).execute(
                "ALTER TABLE journey.map_node DROP CONSTRAINT no_node_for_failing"
            )

        await _folded(db, tenant)
    finally:
        stop.set()
        await task
    compacted = await _as_rebuilt(db, tenant)
    assert len(compacted["map_step"]) == 21


async def test_a_batch_s_duration_leaves_out_its_wait_for_the_batch_before(
    db: Database, journey_settings
):
    """While backlogged a batch waits for the one before it to commit before writing its
    aggregate changes: the duration an SRE reads is the batch's own, without that wait."""
    await _queued(db, journey_settings, {"c0": 3})
    settings = journey_settings.model_copy(update={"map_settle_seconds": 0.0})
    before = asyncio.get_running_loop().create_future()  # the batch before, still committing
    folded: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    observed = _sample("batch_duration_seconds_sum")
    started = asyncio.get_running_loop().time()
    batch = asyncio.create_task(Compactor(db, settings).step(folded, before=before))
    assert len(await folded) == 1  # claimed, folded, its own rows written: now it waits
    held = 1.0
    await asyncio.sleep(held)  # the batch before takes this long to commit
    before.set_result(None)
    outcome = await batch
    total = asyncio.get_running_loop().time() - started
    assert outcome.customers == 1
    assert 0 < _sample("batch_duration_seconds_sum") - observed <= total - held
