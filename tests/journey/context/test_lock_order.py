"""The journey worker and the engagement consumer lock the same context rows without a deadlock.

A chunk that merges customers used to lock contexts in several statements (the customers it
touched before the merge, then the merge's two): holding a later key while asking for an earlier
one. The engagement consumer, locking its batch in key order, could then hold the earlier key
and wait for the later one: ``DeadlockDetectedError`` while the demo loaded. Here the worst
interleaving is forced on real PostgreSQL (a third transaction holds the lowest key until both
are in place) and both must finish, with every effect kept."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from services.journey.applier import ChunkApplier
from services.journey.config import JourneySettings
from services.journey.context.engagement import EngagementFolder
from shared.db import Database, raw_connection
from shared.events.engagement import CustomerEngagementChanged
from tests.journey.maps.reference import Ev
from tests.journey.maps.support import apply_chunk, email, envelope, new_tenant
from tests.support import eventually

BASE = datetime(2026, 1, 5, tzinfo=UTC)


def engagement_record(tenant: str, customer: uuid.UUID, score: float) -> ConsumerRecord[Any, Any]:
    value = CustomerEngagementChanged(
        tenant=tenant,
        customer_id=str(customer),
        version=7,
        changed_at=BASE,
        score=score,
        scored_at=BASE,
        segment="default",
        threshold=40.0,
        contributions={"activity": score},
    ).to_json()
    key = f"{tenant}|{customer}".encode()
    return ConsumerRecord("engagement", 0, 0, 0, 0, key, value, None, len(key), len(value), ())


async def waiting_or_done(db: Database, application: str, task: asyncio.Task[Any]) -> bool:
    """True once ``task`` finished or its backend waits for a row lock."""
    if task.done():
        return True
    async with db.session() as session:
        waiting = await (await raw_connection(session)).fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = $1 AND wait_event_type = 'Lock'",
            application,
        )
    return bool(waiting)


async def customer_of(db: Database, tenant: str, name: str) -> uuid.UUID:
    async with db.session() as session:
        found: uuid.UUID = await (await raw_connection(session)).fetchval(
            "SELECT customer_id FROM journey.identifier WHERE tenant_id = $1 AND value = $2",
            tenant,
            email(tenant, name)["value"],
        )
    return found


async def contexts(db: Database, tenant: str) -> dict[uuid.UUID, dict[str, Any]]:
    async with db.session() as session:
        rows = await (await raw_connection(session)).fetch(
            "SELECT customer_id, doc::text FROM journey.context WHERE tenant_id = $1", tenant
        )
    return {r[0]: orjson.loads(r[1]) for r in rows}


async def test_a_merging_chunk_and_the_engagement_consumer_on_the_same_customers_never_deadlock(
    db: Database, journey_settings: JourneySettings, producer: AIOKafkaProducer
):
    tenant = new_tenant()
    names = ("p", "q", "r")
    born = [
        envelope(tenant, Ev(f"born-{n}", "identity.linked", i, {}), BASE, [email(tenant, n)])
        for i, n in enumerate(names)
    ]
    await apply_chunk(db, journey_settings, born)
    async with db.session() as session:  # in the order every locker takes them
        ids = [
            r[0]
            for r in await (await raw_connection(session)).fetch(
                "SELECT customer_id FROM journey.context WHERE tenant_id = $1 "
                "ORDER BY tenant_id, customer_id::text",
                tenant,
            )
        ]
    assert len(ids) == 3
    names_of = {await customer_of(db, tenant, n): n for n in names}
    low, mid, high = ids

    # The chunk: an event of ``high`` (its context is locked first), then a link of ``low`` and
    # ``mid`` (a merge: their contexts next). The consumer's batch: ``mid`` and ``high``.
    later = BASE + timedelta(days=1)
    chunk = [
        envelope(tenant, Ev("touch-high", "identity.linked", 0, {}), later,
                 [email(tenant, names_of[high])]),
        envelope(tenant, Ev("link-low-mid", "identity.linked", 1, {}), later,
                 [email(tenant, names_of[low]), email(tenant, names_of[mid])]),
    ]  # fmt: skip
    batch = [engagement_record(tenant, mid, 31.0), engagement_record(tenant, high, 62.0)]

    run_id = uuid.uuid4().hex[:8]
    worker_app, consumer_app = f"lock-worker-{run_id}", f"lock-engagement-{run_id}"
    worker_db = Database(journey_settings.dsn, pool_size=1, application_name=worker_app)
    consumer_db = Database(journey_settings.dsn, pool_size=1, application_name=consumer_app)
    settings = journey_settings.model_copy(update={"engagement_unknown_retries": 0})
    folder = EngagementFolder(db=consumer_db, producer=producer, settings=settings)

    async def work() -> None:
        async with worker_db.session() as session:
            await ChunkApplier(await raw_connection(session), journey_settings).run(chunk)

    try:
        async with db.session() as session:  # holds ``low`` until both are in place
            await (await raw_connection(session)).execute(
                "SELECT 1 FROM journey.context WHERE tenant_id = $1 AND customer_id = $2 "
                "FOR UPDATE",
                tenant,
                low,
            )
            working = asyncio.create_task(work())
            await eventually(lambda: waiting_or_done(db, worker_app, working))
            assert not working.done()  # the chunk waits for ``low``
            folding = asyncio.create_task(folder.handle(batch))
            await eventually(lambda: waiting_or_done(db, consumer_app, folding))
        results = await asyncio.wait_for(
            asyncio.gather(working, folding, return_exceptions=True), 60
        )
    finally:
        await worker_db.dispose()
        await consumer_db.dispose()
    assert [r for r in results if isinstance(r, BaseException)] == []

    after = await contexts(db, tenant)
    assert len({low, mid} & set(after)) == 1  # merged: the survivor's context is left
    assert after[high]["engagement"]["score"] == 62.0  # the consumer's change …
    assert "touch-high" in orjson.dumps(after[high]).decode()  # … and the worker's event
