import orjson
from aiokafka import AIOKafkaProducer

from services.ingest.config import IngestSettings
from services.ingest.redrive import RedriveFilter, redrive
from shared.db import Database
from tests.ingest.conftest import produce, stored_ids
from tests.support import TenantFactory, cloud_event, eventually, sample


async def test_events_of_a_tenant_created_later_are_stored_after_a_redrive(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    worker: object,
):
    known = await make_tenant()
    late_id = f"late-{known.id}"
    early = [cloud_event(tenant=late_id) for _ in range(3)]
    broken = orjson.dumps(cloud_event(tenant=known.id, type="case.opened"))  # no case_id
    await produce(producer, ingest_settings.topic_raw, [*map(orjson.dumps, early), broken])

    async def refused() -> bool:
        counts = await redrive(ingest_settings, RedriveFilter(), dry_run=True, idle_seconds=0.5)
        return counts == {"unknown_tenant": 3, "schema": 1}

    await eventually(refused)
    await make_tenant(tenant_id=late_id)  # the cause is fixed

    wanted = RedriveFilter(reasons={"unknown_tenant"}, tenant=late_id)
    assert await redrive(ingest_settings, wanted, idle_seconds=0.5) == {"unknown_tenant": 3}

    async def stored() -> bool:
        return sorted(await stored_ids(db, late_id)) == sorted(e["id"] for e in early)

    await eventually(stored)
    # a second redrive re-sends them again: the worker sees them as duplicates
    duplicates = sample("waypoint_ingest_events_duplicate_total", channel="none")
    assert await redrive(ingest_settings, wanted, idle_seconds=0.5) == {"unknown_tenant": 3}

    async def seen_again() -> bool:
        now = sample("waypoint_ingest_events_duplicate_total", channel="none")
        return now - duplicates == 3

    await eventually(seen_again)
    assert len(await stored_ids(db, late_id)) == 3
