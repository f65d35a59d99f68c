"""A bug in our code is not bad data: the event is retried (counted, never skipped, never
dead-lettered) until the code works, then applied exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.journey.context import rules as ctx
from shared.db import Database
from shared.events import Envelope
from shared.kafka import ensure_topics
from tests.journey.conftest import Worker, cloud_event, context_when, journey_settings_for, send
from tests.support import TenantFactory, eventually, sample
from tests.topics import committed, records_in

FAILURES = "waypoint_consumer_batch_failures_total"


async def test_a_reducer_bug_is_retried_not_dead_lettered_and_applied_once_fixed(
    journey: Any,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
    settings_overrides: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
):
    run_id = uuid.uuid4().hex[:8]
    settings = journey_settings_for(
        settings_overrides,
        topic_normalized=f"journey-bug-{run_id}.normalized",
        topic_activity=f"journey-bug-{run_id}.activity",
        topic_dead_letter=f"journey-bug-{run_id}.deadletter",
    )
    await ensure_topics(
        settings,
        [settings.topic_normalized, settings.topic_activity, settings.topic_dead_letter],
        partitions=1,
    )
    tenant = await make_tenant(scopes=["context:read"])
    email = f"bug-{run_id}@x.test"
    broken = True
    real_apply_events = ctx.apply_events  # the worker folds a customer's chunk in one call

    def apply_events(doc: dict[str, Any], envs: Sequence[Envelope]) -> dict[str, Any]:
        if broken and any(env.tenant == tenant.id for env in envs):
            raise KeyError("a reducer bug")
        return real_apply_events(doc, envs)

    monkeypatch.setattr(ctx, "apply_events", apply_events)
    failures_before = sample(FAILURES, service="journey")
    dead_before = sample("waypoint_journey_events_total", result="dead_lettered")
    worker = Worker(settings)
    try:
        event = cloud_event(
            tenant=tenant.id, type="fact.collected", name="plan", value="gold",
            identifiers=[{"type": "email", "value": email}],
        )  # fmt: skip
        await send(producer, settings, event)

        async def retried_twice() -> bool:
            return sample(FAILURES, service="journey") >= failures_before + 2

        await eventually(retried_twice, timeout=60)
        assert sample("waypoint_consumer_consecutive_failures", service="journey") >= 2
        assert await records_in(settings, producer, settings.topic_dead_letter) == 0
        assert sample("waypoint_journey_events_total", result="dead_lettered") == dead_before
        assert await committed(
            settings, producer, settings.consumer_group, settings.topic_normalized
        ) in (
            {},
            {0: 0},
        )  # the offset of the failing event is never committed past it

        broken = False  # the fix is deployed
        context = await context_when(
            journey, tenant.headers, lambda c: bool(c["facts"]),
            identifier_type="email", value=email,
        )  # fmt: skip

        async def offset_committed() -> bool:
            offsets = await committed(
                settings, producer, settings.consumer_group, settings.topic_normalized
            )
            return offsets == {0: 1}

        await eventually(offset_committed)
    finally:
        await worker.stop()
    assert context["event_count"] == 1
    assert await records_in(settings, producer, settings.topic_activity) == 1  # one activity
    assert await records_in(settings, producer, settings.topic_dead_letter) == 0
    async with db.session() as session:
        stored = await session.scalar(
            text("SELECT count(*) FROM journey.event WHERE tenant_id = :t"), {"t": tenant.id}
        )
    assert stored == 1
    assert sample("waypoint_consumer_consecutive_failures", service="journey") == 0
