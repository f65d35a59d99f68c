"""Journey's outbox: the activity leaves only after its transaction commits; commands answer
once committed, even with the broker down; an Idempotency-Key makes a retry take effect once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiokafka import TopicPartition
from sqlalchemy import text

from services.journey.app import create_app
from services.journey.config import JourneySettings
from shared.db import Database
from shared.embedded import free_port
from shared.kafka import make_consumer
from tests import support
from tests.journey.conftest import cloud_event, context_when, send
from tests.journey.test_dead_letter import dead_letter_with
from tests.support import app_client, eventually, refused_at_commit

Tenant = support.TestTenant


async def activities_of(settings: JourneySettings, tenant: str) -> list[dict[str, Any]]:
    """Every activity of ``tenant`` on the activity topic up to its end right now."""
    consumer = make_consumer(settings, group_id=f"read-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        await consumer.topics()  # fetches the metadata
        partitions = [
            TopicPartition(settings.topic_activity, p)
            for p in sorted(consumer.partitions_for_topic(settings.topic_activity) or ())
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(60):
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for r in records:
                        if r.key and r.key.startswith(f"{tenant}|".encode()):
                            found.append(orjson.loads(r.value))
                # The end: the fetch responses' high watermarks (ListOffsets can be stale on
                # the embedded broker), and at least the end offsets asked for above.
                behind = [
                    tp
                    for tp in partitions
                    if consumer.highwater(tp) is None
                    or await consumer.position(tp) < max(ends[tp], consumer.highwater(tp) or 0)
                ]
                if not behind:
                    break
    finally:
        await consumer.stop()
    return found


async def _customer(journey, producer, settings: JourneySettings, tenant: Tenant) -> str:
    email = f"outbox-{uuid.uuid4().hex[:8]}@x.test"
    await send(
        producer,
        settings,
        cloud_event(tenant=tenant.id, identifiers=[{"type": "email", "value": email}]),
    )
    found = await context_when(
        journey, tenant.headers, lambda c: True, identifier_type="email", value=email
    )
    return str(found["customer_id"])


async def _fact_events(db: Database, tenant: str) -> int:
    async with db.session() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM journey.event "
                "WHERE tenant_id = :t AND type = 'fact.collected'"
            ),
            {"t": tenant},
        )
    return int(count or 0)


async def _outbox_rows(db: Database, tenant: str) -> int:
    async with db.session() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM journey.outbox WHERE tenant_id = :t"), {"t": tenant}
        )
    return int(count or 0)


async def test_a_fact_recorded_while_the_broker_is_down_is_201_and_goes_out_later(
    journey, journey_worker, producer, journey_settings, settings_overrides, db, make_tenant
):
    tenant = await make_tenant(scopes=["context:read", "context:write"])
    cid = await _customer(journey, producer, journey_settings, tenant)
    nowhere = JourneySettings(  # an API whose broker is unreachable
        **{**settings_overrides, "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}
    )
    async with app_client(create_app(nowhere)) as client:
        r = await client.post(
            f"/v1/customers/{cid}/facts",
            json={"name": "plan", "value": "gold"},
            headers=tenant.headers,
        )
    assert r.status_code == 201, r.text
    event_id = r.json()["event_id"]
    assert await _fact_events(db, tenant.id) == 1

    # The worker's relay (on the reachable broker) publishes it.
    async def published() -> bool:
        return any(
            (a.get("event") or {}).get("id") == event_id
            for a in await activities_of(journey_settings, tenant.id)
        )

    await eventually(published, timeout=30, interval=0.5)
    await eventually(lambda: _zero(_outbox_rows(db, tenant.id)), timeout=10)


async def _zero(count: Any) -> bool:
    return await count == 0


async def test_an_activity_whose_transaction_fails_is_never_published(
    journey, journey_worker, producer, journey_settings, db, make_tenant
):
    """The chunk's COMMIT is refused: the event is dead-lettered, and alerts never hears of it."""
    tenant = await make_tenant(scopes=["context:read"])
    marker = uuid.uuid4().hex
    event = cloud_event(
        tenant=tenant.id,
        id=f"refused-{marker}",
        identifiers=[{"type": "email", "value": f"refused-{marker[:6]}@x.test"}],
    )
    async with refused_at_commit(db, "journey.event", tenant.id):
        await send(producer, journey_settings, event)
        assert await dead_letter_with(journey_settings, marker) is not None
    assert await _outbox_rows(db, tenant.id) == 0
    assert await activities_of(journey_settings, tenant.id) == []


async def test_a_retried_fact_with_an_idempotency_key_is_recorded_once(
    journey, journey_worker, producer, journey_settings, db, make_tenant
):
    tenant = await make_tenant(scopes=["context:read", "context:write"])
    cid = await _customer(journey, producer, journey_settings, tenant)
    url = f"/v1/customers/{cid}/facts"
    fact = {"name": "plan", "value": "gold"}
    key = {"Idempotency-Key": f"fact-{uuid.uuid4()}"}
    first = await journey.post(url, json=fact, headers={**tenant.headers, **key})
    assert first.status_code == 201, first.text
    again = await journey.post(url, json=fact, headers={**tenant.headers, **key})
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await _fact_events(db, tenant.id) == 1

    other = await journey.post(
        url, json={"name": "plan", "value": "silver"}, headers={**tenant.headers, **key}
    )
    assert other.status_code == 422, other.text
    assert other.json()["error"] == "validation_error"
    assert "different request" in other.json()["detail"]

    # Retries racing each other: one takes effect, every one gets its answer.
    racing = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    answers = await asyncio.gather(
        *(
            journey.post(
                url, json={"name": "tier", "value": "2"}, headers={**tenant.headers, **racing}
            )
            for _ in range(4)
        )
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["event_id"] for a in answers}) == 1
    assert await _fact_events(db, tenant.id) == 2

    # Without a key, a retry is a new fact (as before); a bad key is a 422.
    await journey.post(url, json=fact, headers=tenant.headers)
    assert await _fact_events(db, tenant.id) == 3
    bad = await journey.post(url, json=fact, headers={**tenant.headers, "Idempotency-Key": "a b"})
    assert bad.status_code == 422, bad.text


async def test_a_retried_merge_and_split_with_an_idempotency_key_take_effect_once(
    journey, journey_worker, producer, journey_settings, db, make_tenant
):
    tenant = await make_tenant(scopes=["admin"])
    a = await _customer(journey, producer, journey_settings, tenant)
    b = await _customer(journey, producer, journey_settings, tenant)
    merge = {"survivor_id": a, "merged_id": b, "reason": "same person"}
    key = {"Idempotency-Key": f"merge-{uuid.uuid4()}"}
    first = await journey.post("/v1/customers/merge", json=merge, headers={**tenant.headers, **key})
    assert first.status_code == 200, first.text
    again = await journey.post("/v1/customers/merge", json=merge, headers={**tenant.headers, **key})
    assert again.status_code == 200, again.text  # without the key: 409, already one customer
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    unkeyed = await journey.post("/v1/customers/merge", json=merge, headers=tenant.headers)
    assert unkeyed.status_code == 409, unkeyed.text

    split_key = {"Idempotency-Key": f"split-{uuid.uuid4()}"}
    url = f"/v1/customers/{a}/split"
    split = await journey.post(url, json={}, headers={**tenant.headers, **split_key})
    assert split.status_code == 200, split.text
    retried = await journey.post(url, json={}, headers={**tenant.headers, **split_key})
    assert retried.json() == split.json()
    # The same key on another route is another request.
    reused = await journey.post(
        "/v1/customers/merge", json=merge, headers={**tenant.headers, **split_key}
    )
    assert reused.status_code == 422, reused.text

    async with db.session() as session:
        merges = await session.scalar(
            text("SELECT count(*) FROM journey.merge WHERE tenant_id = :t"), {"t": tenant.id}
        )
    assert merges == 1
    kinds = [
        x["kind"]
        for x in await eventually(
            lambda: _activities_with(journey_settings, tenant.id, "split"), timeout=30, interval=0.5
        )
    ]
    assert kinds.count("merged") == 1
    assert kinds.count("split") == 1


async def _activities_with(
    settings: JourneySettings, tenant: str, kind: str
) -> list[dict[str, Any]] | None:
    found = await activities_of(settings, tenant)
    return found if any(a["kind"] == kind for a in found) else None
