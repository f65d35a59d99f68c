"""One record's own fault, at any step, dead-letters that record and the partition moves on.

Through the real broker and database: a 300-level-deep event (it used to pass validation, fail
re-serialization and stall every tenant's ingestion), one the worker cannot serialize, and
records too large to publish.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from services.ingest.redrive import RedriveFilter, redrive
from services.ingest.worker import run
from shared.db import Database
from shared.kafka import header, make_producer
from tests.ingest.conftest import read_topic, stored_ids
from tests.support import TenantFactory, app_client, cloud_event, eventually, sample

DEAD = "waypoint_ingest_events_dead_lettered_total"


def nested(levels: int) -> str:
    """A JSON object nesting ``levels`` objects: {"a": {"a": … {} … }}."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def deep_event(tenant: str, levels: int = 300) -> tuple[str, bytes]:
    """A valid event but for its depth, as bytes (orjson itself refuses to write it)."""
    event_id = f"deep-{uuid.uuid4().hex[:8]}"
    head = orjson.dumps(cloud_event(tenant=tenant, id=event_id))[:-2]  # without the closing }}
    return event_id, head + b',"deep":' + nested(levels).encode() + b"}}"


async def send_to(producer: AIOKafkaProducer, topic: str, *values: bytes) -> None:
    """Produce to one partition, in order: what follows a bad record waits behind it."""
    for value in values:
        await producer.send_and_wait(topic, value, key=b"same", partition=0)


async def dead_letters(
    settings: IngestSettings, wanted: set[str], marker: str = "waypoint-source-offset"
) -> dict[str, Any]:
    """Dead letters by the event id they carry, once all of ``wanted`` are there."""

    def by_id(records: list[Any]) -> dict[str, Any]:
        found = {}
        for r in records:
            for event_id in wanted:
                if event_id.encode() in (r.value or b"") and header(r.headers, marker):
                    found[event_id] = r
        return found

    records = await read_topic(
        settings, settings.topic_dead_letter, until=lambda rs: by_id(rs).keys() >= wanted
    )
    return by_id(records)


async def logged_reasons(db: Database, tenant: str) -> dict[str, str]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT event_id, reason FROM ingest.dead_letter WHERE tenant_id = :t"),
            {"t": tenant},
        )
        return {r.event_id: r.reason for r in rows}


async def test_a_300_deep_event_is_dead_lettered_and_events_after_it_are_stored(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant, other = await make_tenant(), await make_tenant()
    deep_id, deep = deep_event(tenant.id)
    after = cloud_event(tenant=tenant.id)
    other_tenant = cloud_event(tenant=other.id)
    too_deep_before = sample(DEAD, reason="too_deep")
    await send_to(
        producer, ingest_settings.topic_raw, deep, orjson.dumps(after), orjson.dumps(other_tenant)
    )

    async def both_stored() -> bool:
        return await stored_ids(db, tenant.id) == [after["id"]] and await stored_ids(
            db, other.id
        ) == [other_tenant["id"]]

    await eventually(both_stored)
    letter = (await dead_letters(ingest_settings, {deep_id}))[deep_id]
    assert letter.value == deep  # unchanged
    assert header(letter.headers, "waypoint-reason") == "too_deep"
    assert "more than 64 levels" in (header(letter.headers, "waypoint-error") or "")
    assert await logged_reasons(db, tenant.id) == {deep_id: "too_deep"}
    assert sample(DEAD, reason="too_deep") == too_deep_before + 1


async def test_a_record_the_worker_cannot_serialize_is_dead_lettered_not_retried(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    worker: object,
    monkeypatch: pytest.MonkeyPatch,
):
    """Defence in depth: with a gap in validation (the depth check switched off here), the
    record that fails in a later step is isolated, not retried forever."""
    monkeypatch.setattr("shared.events.envelope.check_depth", lambda *_a, **_k: None)
    tenant = await make_tenant()
    deep_id, deep = deep_event(tenant.id)
    after = cloud_event(tenant=tenant.id)
    await send_to(producer, ingest_settings.topic_raw, deep, orjson.dumps(after))

    async def stored() -> bool:
        return await stored_ids(db, tenant.id) == [after["id"]]

    await eventually(stored)
    letter = (await dead_letters(ingest_settings, {deep_id}))[deep_id]
    assert header(letter.headers, "waypoint-reason") == "unprocessable"
    error = header(letter.headers, "waypoint-error") or ""
    assert "serializing the normalized event failed" in error
    assert "depth" in error
    assert await logged_reasons(db, tenant.id) == {deep_id: "unprocessable"}


async def test_records_too_large_to_publish_are_dead_lettered_and_the_partition_moves_on(
    db: Database,
    make_tenant: TenantFactory,
    ingest_settings: IngestSettings,
    settings_overrides: dict[str, Any],
):
    """The worker's producer sends at most 4 MiB. A 5 MiB event within the configured event
    limit cannot be published: refused before it is stored. A 6 MiB record over the event limit
    is refused as before, and its dead letter is cut to fit (it used to stall the partition)."""
    settings = ingest_settings.model_copy(update={"max_event_bytes": 5_500_000})
    tenant = await make_tenant()
    big = cloud_event(tenant=tenant.id, notes="x" * 5_000_000)
    huge = cloud_event(tenant=tenant.id, notes="y" * 6_000_000)
    after = cloud_event(tenant=tenant.id)
    sender = make_producer(settings, max_request_size=16 * 1024 * 1024)
    await sender.start()
    try:
        await send_to(
            sender,
            settings.topic_raw,
            orjson.dumps(big),
            orjson.dumps(huge),
            b"{not json",
            orjson.dumps(after),
        )
    finally:
        await sender.stop()

    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop=stop))
    try:

        async def stored() -> bool:
            return await stored_ids(db, tenant.id) == [after["id"]]

        await eventually(stored, timeout=60)
        letters = await dead_letters(settings, {big["id"], huge["id"]})
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    publish_refused, validation_refused = letters[big["id"]], letters[huge["id"]]
    assert header(publish_refused.headers, "waypoint-reason") == "oversized"
    assert "largest message this worker may publish" in (
        header(publish_refused.headers, "waypoint-error") or ""
    )
    assert header(validation_refused.headers, "waypoint-reason") == "oversized"
    for letter, original in ((publish_refused, big), (validation_refused, huge)):
        size = len(orjson.dumps(original))
        assert header(letter.headers, "waypoint-truncated") == str(size)
        assert 3_000_000 < len(letter.value) < 4 * 1024 * 1024
        assert orjson.dumps(original).startswith(letter.value)
    assert await logged_reasons(db, tenant.id) == {big["id"]: "oversized", huge["id"]: "oversized"}

    async def redrive_skips_the_parts() -> bool:
        # The not-JSON record was dead-lettered after the 6 MiB one, in the same partition:
        # a reader that counts it has read the truncated one too, and did not count it.
        counts = await redrive(settings, RedriveFilter(), dry_run=True, idle_seconds=0.5)
        return counts == {"not_json": 1}

    await eventually(redrive_skips_the_parts)


async def test_the_http_api_refuses_a_deep_body_with_a_reason(
    ingest_settings: IngestSettings, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["events:write"])
    _, deep = deep_event(tenant.id)
    track = {
        "type": "track",
        "userId": "u-1",
        "event": "Clicked",
        "properties": orjson.loads(nested(300)),
    }
    shallow_enough = {**track, "properties": orjson.loads(nested(50))}
    async with app_client(create_app(ingest_settings)) as client:
        response = await client.post(
            "/v1/events",
            content=deep,
            headers={**tenant.headers, "content-type": "application/cloudevents+json"},
        )
        assert response.status_code == 422, response.text
        [result] = response.json()["detail"]
        assert result["reason"] == "too_deep"
        assert "64 levels" in result["message"]

        for path, body in (("/v1/track", track), ("/v1/batch", {"batch": [track]})):
            response = await client.post(
                path,
                content=_dumps_deep(body),
                headers={**tenant.headers, "content-type": "application/json"},
            )
            assert response.status_code == 422, (path, response.text)
            assert response.json()["detail"][0]["reason"] == "too_deep"

        response = await client.post(
            "/v1/track", content=_dumps_deep(shallow_enough), headers=tenant.headers
        )
        assert response.status_code == 200, response.text


def _dumps_deep(value: Any) -> bytes:
    """JSON for a structure deeper than orjson writes (it stops at 255 levels)."""
    if isinstance(value, dict):
        return (
            b"{"
            + b",".join(orjson.dumps(k) + b":" + _dumps_deep(v) for k, v in value.items())
            + b"}"
        )
    if isinstance(value, list):
        return b"[" + b",".join(_dumps_deep(v) for v in value) + b"]"
    return orjson.dumps(value)
