"""A bug in the engine is not bad data: the activity is retried (counted, never skipped, never
dead-lettered) until the code works, then applied exactly once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.alerts import engine, worker
from services.alerts.config import AlertsSettings
from shared.db import Database
from shared.kafka import ensure_topics
from tests.alerts.conftest import T0, Clock, running, usage
from tests.support import TenantFactory, eventually, sample
from tests.topics import committed, records_in

FAILURES = "waypoint_consumer_batch_failures_total"


async def test_an_engine_bug_is_retried_not_dead_lettered_and_applied_once_fixed(
    alerts_settings: AlertsSettings,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
    monkeypatch: pytest.MonkeyPatch,
):
    run_id = uuid.uuid4().hex[:8]
    settings = alerts_settings.model_copy(
        update={
            "topic_activity": f"alerts-bug-{run_id}.activity",
            "topic_dead_letter": f"alerts-bug-{run_id}.deadletter",
        }
    )
    await ensure_topics(
        settings, [settings.topic_activity, settings.topic_dead_letter], partitions=1
    )
    tenant = (await make_tenant()).id
    broken = True
    real_apply = engine._apply

    def apply(state: Any, activity: Any, model: Any) -> None:
        if broken and activity.tenant == tenant:
            raise KeyError("an engine bug")
        real_apply(state, activity, model)

    monkeypatch.setattr(engine, "_apply", apply)
    failures_before = sample(FAILURES, service="alerts")
    dead_before = sample("waypoint_alerts_activities_total", outcome="dead_lettered")
    activity = usage(tenant=tenant, customer="c-1", at=T0, active=5)
    async with running(worker.run, settings, clock=Clock(T0 + timedelta(days=1))):
        await producer.send_and_wait(
            settings.topic_activity, activity.to_json(), key=activity.kafka_key()
        )

        async def retried_twice() -> bool:
            return sample(FAILURES, service="alerts") >= failures_before + 2

        await eventually(retried_twice, timeout=60)
        assert sample("waypoint_consumer_consecutive_failures", service="alerts") >= 2
        assert await records_in(settings, producer, settings.topic_dead_letter) == 0
        assert sample("waypoint_alerts_activities_total", outcome="dead_lettered") == dead_before
        group = settings.consumer_group
        assert await committed(settings, producer, group, settings.topic_activity) in ({}, {0: 0})
        async with db.session() as session:
            processed = await session.scalar(
                text("SELECT count(*) FROM alerts.processed_activity WHERE tenant_id = :t"),
                {"t": tenant},
            )
        assert processed == 0  # every attempt rolled back

        broken = False  # the fix is deployed

        async def offset_committed() -> bool:
            return await committed(settings, producer, group, settings.topic_activity) == {0: 1}

        await eventually(offset_committed, timeout=60)
    assert await records_in(settings, producer, settings.topic_dead_letter) == 0
    async with db.session() as session:
        recent = await session.scalar(
            text(
                "SELECT recent_events FROM alerts.customer_state "
                "WHERE tenant_id = :t AND customer_id = 'c-1'"
            ),
            {"t": tenant},
        )
    recent = orjson.loads(recent) if isinstance(recent, str | bytes) else recent
    assert [e["id"] for e in recent] == [activity.event["id"]]  # applied exactly once
    assert sample("waypoint_consumer_consecutive_failures", service="alerts") == 0
