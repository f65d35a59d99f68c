import uuid
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.config import IngestSettings
from shared.db import Database
from shared.kafka import header
from tests.ingest.conftest import produce, read_topic, stored_ids
from tests.support import TenantFactory, cloud_event, eventually, sample

DEAD = "waypoint_ingest_events_dead_lettered_total"


async def test_structured_and_binary_events_are_stored_once_and_published(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant = await make_tenant()
    structured = cloud_event(
        tenant=tenant.id,
        identifiers=[{"type": "phone", "value": "(415) 555-0123", "verified_by": "caller_id"}],
        channel="phone",
    )
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(structured)])
    binary_id = uuid.uuid4().hex
    binary_headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", binary_id.encode()),
        ("ce_source", b"crm"),
        ("ce_type", b"case.opened"),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
        ("ce_tenant", tenant.id.encode()),
        ("content-type", b"application/json"),
    ]
    data = {"identifiers": [{"type": "email", "value": " Alice@Example.ORG "}], "case_id": "C-1"}
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(data)], headers=binary_headers)

    async def both_stored() -> bool:
        return len(await stored_ids(db, tenant.id)) == 2

    await eventually(both_stored)
    assert sorted(await stored_ids(db, tenant.id)) == sorted([structured["id"], binary_id])
    async with db.session() as session:
        row = (
            await session.execute(
                text(
                    "SELECT identifiers, envelope FROM ingest.event "
                    "WHERE tenant_id = :t AND event_id = :id"
                ),
                {"t": tenant.id, "id": binary_id},
            )
        ).one()
    assert row.identifiers == ["email:alice@example.org"]
    assert row.envelope["type"] == "case.opened"
    assert row.envelope["data"]["case_id"] == "C-1"

    published = await read_topic(ingest_settings, ingest_settings.topic_normalized, expect=2)
    by_id = {orjson.loads(r.value)["id"]: r for r in published}
    assert set(by_id) == {structured["id"], binary_id}
    phone_event = orjson.loads(by_id[structured["id"]].value)
    assert phone_event["data"]["identifiers"][0]["value"] == "+14155550123"
    assert by_id[structured["id"]].key == f"{tenant.id}|phone:+14155550123".encode()


async def test_duplicates_are_stored_once(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant = await make_tenant()
    original = cloud_event(tenant=tenant.id, touchpoint="first")
    event = orjson.dumps(original)
    other = cloud_event(tenant=tenant.id)
    duplicates_before = sample("waypoint_ingest_events_duplicate_total", channel="none")
    # a repeat within one batch, then the same event again much later
    await produce(producer, ingest_settings.topic_raw, [event, event, orjson.dumps(other)])

    async def two_stored() -> bool:
        return len(await stored_ids(db, tenant.id)) == 2

    await eventually(two_stored)
    resent = {**original, "data": {**original["data"], "touchpoint": "changed"}}
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(resent)])
    marker = cloud_event(tenant=tenant.id)
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(marker)])

    async def marker_stored() -> bool:
        return marker["id"] in await stored_ids(db, tenant.id)

    await eventually(marker_stored)
    assert len(await stored_ids(db, tenant.id)) == 3
    duplicates = sample("waypoint_ingest_events_duplicate_total", channel="none")
    assert duplicates - duplicates_before == 2
    # downstream sees what the store holds: the resent, different copy is not passed on
    published = await read_topic(ingest_settings, ingest_settings.topic_normalized, expect=4)
    copies = [orjson.loads(r.value) for r in published]
    touchpoints = [c["data"]["touchpoint"] for c in copies if c["id"] == original["id"]]
    assert touchpoints == ["first", "first"]


async def test_poison_records_are_dead_lettered_and_good_ones_after_them_stored(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant = await make_tenant()
    future = datetime.now(UTC) + timedelta(days=2)
    poison = {
        "not_json": b"{this is not json",
        "schema": orjson.dumps(cloud_event(tenant=tenant.id, type="case.opened")),  # no case_id
        "unknown_type": orjson.dumps(cloud_event(tenant=tenant.id, type="contact.teleported")),
        "oversized": orjson.dumps(cloud_event(tenant=tenant.id, text="x" * 300_000)),
        "future_time": orjson.dumps(cloud_event(tenant=tenant.id, time=future)),
        "unknown_tenant": orjson.dumps(cloud_event(tenant="no-such-tenant-anywhere")),
        "missing_attribute": orjson.dumps({"specversion": "1.0", "id": "x", "tenant": tenant.id}),
    }
    good = [cloud_event(tenant=tenant.id) for _ in range(3)]
    dead_before = {r: sample(DEAD, reason=r) for r in poison}
    values = [*poison.values(), *(orjson.dumps(g) for g in good)]
    await produce(producer, ingest_settings.topic_raw, values, key=b"same-partition")

    async def good_stored() -> bool:
        return len(await stored_ids(db, tenant.id)) == 3

    await eventually(good_stored)
    assert sorted(await stored_ids(db, tenant.id)) == sorted(g["id"] for g in good)

    dead = await read_topic(ingest_settings, ingest_settings.topic_dead_letter, expect=len(poison))
    reasons = {header(r.headers, "waypoint-reason"): r for r in dead}
    assert set(reasons) == set(poison)
    for reason, record in reasons.items():
        assert record.value == poison[reason]
        assert header(record.headers, "waypoint-error")
        assert header(record.headers, "waypoint-source-topic") == ingest_settings.topic_raw
        assert header(record.headers, "waypoint-source-offset") is not None
    assert "more than" in header(reasons["future_time"].headers, "waypoint-error")
    assert {r: sample(DEAD, reason=r) - dead_before[r] for r in poison} == dict.fromkeys(poison, 1)

    async with db.session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT reason, tenant_id FROM ingest.dead_letter WHERE source_topic = :topic"
                ),
                {"topic": ingest_settings.topic_raw},
            )
        ).all()
    assert sorted(r.reason for r in rows) == sorted(poison)
    tenant_of = {r.reason: r.tenant_id for r in rows}
    assert tenant_of["schema"] == tenant.id  # readable tenant: shown to that tenant
    assert tenant_of["unknown_tenant"] is None
    assert tenant_of["not_json"] is None


async def test_a_new_tenant_is_picked_up_without_restarting(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    worker: object,
):
    first = await make_tenant()
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(cloud_event(tenant=first.id))])

    async def stored_for_first() -> bool:
        return len(await stored_ids(db, first.id)) == 1

    await eventually(stored_for_first)
    second = await make_tenant()  # created after the worker cached the tenant list
    await produce(
        producer, ingest_settings.topic_raw, [orjson.dumps(cloud_event(tenant=second.id))]
    )

    async def stored_for_second() -> bool:
        return len(await stored_ids(db, second.id)) == 1

    await eventually(stored_for_second)
    # Stored in the batch's transaction, so its dead letters (none) are committed by now too.
    async with db.session() as session:
        refused = await session.scalar(
            text("SELECT count(*) FROM ingest.dead_letter WHERE source_topic = :topic"),
            {"topic": ingest_settings.topic_raw},
        )
    assert refused == 0
