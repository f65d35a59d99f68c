"""A record the worker cannot read goes to the dead-letter topic with a reason; nothing stalls."""

from __future__ import annotations

import uuid

from shared.kafka import header, make_consumer
from tests.journey.conftest import cloud_event, context_when, send


async def dead_letter_with(settings, marker: str):
    """The dead-lettered record whose value contains ``marker`` (or None after ~20 s)."""
    consumer = make_consumer(settings, settings.topic_dead_letter, group_id=f"dl-{marker}")
    await consumer.start()
    try:
        for _ in range(100):
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    if marker.encode() in r.value:
                        return r
    finally:
        await consumer.stop()
    return None


async def test_unreadable_record_is_dead_lettered_and_the_partition_moves_on(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    marker = uuid.uuid4().hex
    key = f"{tenant.id}|email:dl@x.test".encode()
    await producer.send_and_wait(
        journey_settings.topic_normalized, f'{{"not": "an event {marker}"}}'.encode(), key=key
    )
    # Same key, so the same partition, right behind the bad record.
    await send(
        producer,
        journey_settings,
        cloud_event(tenant=tenant.id, identifiers=[{"type": "email", "value": "dl@x.test"}]),
    )
    await context_when(
        journey, tenant.headers, lambda c: True, identifier_type="email", value="dl@x.test"
    )

    found = await dead_letter_with(journey_settings, marker)
    assert found is not None
    assert header(found.headers, "waypoint-reason") == "journey_unparsable"
    assert header(found.headers, "waypoint-service") == "journey"
    assert header(found.headers, "waypoint-error")


async def test_an_event_the_database_refuses_is_isolated_and_dead_lettered(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    """PostgreSQL refuses NUL characters in JSON: that event alone goes to the dead letters."""
    tenant = await make_tenant(scopes=["context:read"])
    marker = uuid.uuid4().hex
    email = f"nul-{marker[:6]}@x.test"
    ident = [{"type": "email", "value": email}]
    poison = cloud_event(
        tenant=tenant.id, type="message.received", identifiers=ident, text=f"{marker}\x00"
    )
    fine = cloud_event(
        tenant=tenant.id, type="fact.collected", identifiers=ident, name="ok", value=1
    )
    await send(producer, journey_settings, poison, fine)
    ctx = await context_when(
        journey, tenant.headers, lambda c: bool(c["facts"]), identifier_type="email", value=email
    )
    assert ctx["event_count"] == 1  # the good one only

    found = await dead_letter_with(journey_settings, marker)
    assert found is not None
    assert header(found.headers, "waypoint-reason") == "journey_apply_failed"
