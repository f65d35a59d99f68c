"""The event store against the real database: idempotent batches, and a row it refuses."""

import uuid
from collections import namedtuple
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.batch import classify, plan
from services.ingest.config import IngestSettings
from services.ingest.records import Limits
from services.ingest.repository import store_events
from services.ingest.worker import IngestHandler
from shared.db import Database
from shared.events import RejectReason
from tests.ingest.conftest import stored_ids
from tests.support import TenantFactory, cloud_event

Record = namedtuple("Record", "topic partition offset key value headers")
LIMITS = Limits(max_bytes=256 * 1024, max_future=timedelta(minutes=5), phone_region="US")


def work_for(tenant: str, events: list[dict]):
    now = datetime.now(UTC)
    topic = f"store-{uuid.uuid4().hex[:6]}"
    records = [Record(topic, 0, i, None, orjson.dumps(e), []) for i, e in enumerate(events)]
    accepted, refused = classify(records, now=now, limits=LIMITS)
    return plan(accepted, refused, known_tenants={tenant}, received_at=now)


async def test_store_events_counts_only_new_rows(db: Database, make_tenant: TenantFactory):
    tenant = await make_tenant()
    events = [cloud_event(tenant=tenant.id, channel="web") for _ in range(3)]
    work = work_for(tenant.id, events)
    async with db.session() as session:
        assert (await store_events(session, work.rows)).new == {"web": 3}
    async with db.session() as session:
        again = await store_events(session, work.rows[:2])
    assert again.new == {}  # all already stored; what the store holds is handed back
    assert set(again.earlier) == {(tenant.id, events[0]["id"]), (tenant.id, events[1]["id"])}
    assert orjson.loads(again.earlier[(tenant.id, events[0]["id"])])["source"] == "tests"
    more = work_for(tenant.id, [*events, cloud_event(tenant=tenant.id)])
    async with db.session() as session:
        assert (await store_events(session, more.rows)).new == {"": 1}
    assert len(await stored_ids(db, tenant.id)) == 4


async def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_stored(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
):
    tenant = await make_tenant()
    events = [cloud_event(tenant=tenant.id) for _ in range(4)]
    work = work_for(tenant.id, events)
    broken = list(work.rows[1])
    broken[8] = '{"unstorable": "\\u0000"}'  # jsonb cannot hold U+0000
    work.rows[1] = tuple(broken)
    handler = IngestHandler(ingest_settings, db, producer)
    with pytest.raises(asyncpg.DataError):  # what handle() catches to go row by row
        await handler.store(work)
    assert await stored_ids(db, tenant.id) == []  # the batch's transaction rolled back
    stored = await handler.store_one_by_one(work)
    assert stored == {"": 3}
    assert sorted(await stored_ids(db, tenant.id)) == sorted(
        e["id"] for i, e in enumerate(events) if i != 1
    )
    assert len(work.publish) == 3
    [(record, rejection)] = work.rejects
    assert record.offset == 1
    assert rejection.reason is RejectReason.schema
    assert "database refused" in rejection.message
    async with db.session() as session:
        logged = (
            await session.execute(
                text("SELECT tenant_id, reason FROM ingest.dead_letter WHERE source_topic = :t"),
                {"t": record.topic},
            )
        ).all()
    assert [(r.tenant_id, r.reason) for r in logged] == [(tenant.id, "schema")]
