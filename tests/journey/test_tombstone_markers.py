"""The worker skips the tombstone look-up for tenants without erasures, and stops skipping it
at an erasure's commit (NOTIFY), when it can no longer be told (its listener is gone), and
after ``max_age_seconds`` in any case."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from services.journey.config import JourneySettings
from services.journey.worker import JourneyProcessor
from shared.db import Database, raw_connection
from shared.privacy import tombstones
from tests.journey.conformance.support import BASE
from tests.journey.maps.reference import Ev
from tests.journey.maps.support import email, envelope
from tests.support import TenantFactory, eventually


async def _bury(db: Database, processor: JourneyProcessor, tenant: str, key: str) -> None:
    async with db.session() as session:  # the erasure's transaction, committed on exit
        conn = await raw_connection(session)
        await processor.keyring.ensure(conn, {tenant})
        digest = processor.keyring.identifier_hash(tenant, key)
        await tombstones.bury(conn, "journey", tenant, str(uuid.uuid4()), [digest])


async def test_an_erasure_ends_the_skipping_for_its_tenant_only(
    db: Database, producer: AIOKafkaProducer, journey_settings: JourneySettings
):
    tenants = TenantFactory(db)
    erasing, other = (await tenants()).id, (await tenants()).id
    processor = JourneyProcessor(db=db, producer=producer, settings=journey_settings)
    try:
        ev = Ev(f"e-{uuid.uuid4().hex[:8]}", "fact.collected", 0, {"name": "n", "value": 1}, "x")
        mine = envelope(erasing, ev, BASE, [email(erasing, "x")])
        theirs = envelope(other, ev, BASE, [email(other, "x")])
        assert await processor.drop_erased([mine, theirs]) == [mine, theirs]
        assert {erasing, other} <= processor.markers.clean.keys()  # looked up, remembered
        assert processor.markers.all_clean({erasing, other})

        await _bury(db, processor, erasing, mine.env.identifiers[0].key)

        async def dropped() -> bool:
            return await processor.drop_erased([mine, theirs]) == [theirs]

        await eventually(dropped, timeout=20)
        assert other in processor.markers.clean
        assert erasing not in processor.markers.clean
    finally:
        await processor.markers.close()


async def test_a_lost_listener_forgets_every_tenant(
    db: Database, producer: AIOKafkaProducer, journey_settings: JourneySettings
):
    tenant = (await TenantFactory(db)()).id
    processor = JourneyProcessor(db=db, producer=producer, settings=journey_settings)
    markers = processor.markers
    try:
        ev = Ev(f"e-{uuid.uuid4().hex[:8]}", "fact.collected", 0, {"name": "n", "value": 1}, "y")
        item = envelope(tenant, ev, BASE, [email(tenant, "y")])
        assert await processor.drop_erased([item]) == [item]
        assert tenant in markers.clean
        assert markers.listener is not None
        pid = markers.listener.get_server_pid()
        async with db.session() as session:  # e.g. a failover or a restart of PostgreSQL
            conn = await raw_connection(session)
            await conn.execute("SELECT pg_terminate_backend($1)", pid)

        async def forgotten() -> bool:
            return not markers.all_clean({tenant}) and tenant not in markers.clean

        await eventually(forgotten, timeout=20)
        # An erasure while nobody listened is still found: the look-up runs again.
        await _bury(db, processor, tenant, item.env.identifiers[0].key)
        assert await processor.drop_erased([item]) == []
        assert markers.listener is not None
        assert not markers.listener.is_closed()
    finally:
        await markers.close()


async def test_what_was_learnt_is_looked_up_again_after_max_age(
    db: Database, producer: AIOKafkaProducer, journey_settings: JourneySettings
):
    tenant = (await TenantFactory(db)()).id
    processor = JourneyProcessor(db=db, producer=producer, settings=journey_settings)
    processor.markers.max_age_seconds = 0.5
    try:
        ev = Ev(f"e-{uuid.uuid4().hex[:8]}", "fact.collected", 0, {"name": "n", "value": 1}, "z")
        item = envelope(tenant, ev, BASE, [email(tenant, "z")])
        assert await processor.drop_erased([item]) == [item]
        assert processor.markers.all_clean({tenant})

        async def stale() -> bool:
            return not processor.markers.all_clean({tenant})

        await eventually(stale, timeout=10)
        assert await processor.drop_erased([item]) == [item]  # looked up again: still clean
        assert processor.markers.all_clean({tenant})
    finally:
        await processor.markers.close()
