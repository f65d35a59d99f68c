"""Engagement changes reach the engagement topic after their transaction commits, never before,
never when it rolls back, and never get lost: a change the broker did not acknowledge stays
pending until it is published. The worker, the decay scheduler and the API all record them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import text

from services.alerts.app import create_app
from services.alerts.config import AlertsSettings
from services.alerts.engagement import _CLAIM, mark_changed, relay_for, settle
from services.alerts.scheduler import rescore_due
from shared.db import Database, raw_connection
from shared.events.engagement import CustomerEngagementChanged
from shared.kafka import ensure_topics, make_consumer
from tests.alerts.conftest import T0, apply, usage
from tests.support import TenantFactory, app_client, eventually, sample

MODEL = {
    "weights": {"activity": 50, "utilisation": 50, "cases": 0, "friction": 0,
                "satisfaction": 0, "sentiment": 0},
    "thresholds": {"alert_below": 50, "rearm_margin": 10, "cooldown_hours": 24,
                   "drop_points": 15, "drop_days": 10},
}  # fmt: skip


@pytest.fixture
async def own(alerts_settings: AlertsSettings) -> AlertsSettings:
    """The alerts settings with a topic of this test's own, so what it reads is its own."""
    own = alerts_settings.model_copy(
        update={"topic_engagement": f"engagement-{uuid.uuid4().hex[:8]}"}
    )
    await ensure_topics(own, [own.topic_engagement], partitions=2)
    return own


async def published(
    settings: AlertsSettings,
    tenant: str,
    until: Callable[[list[CustomerEngagementChanged]], bool],
    *,
    timeout: float = 20.0,
) -> list[CustomerEngagementChanged]:
    """The tenant's messages on the engagement topic, from the start, once ``until`` holds
    (read without a consumer group: assigned partitions, nothing committed)."""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    seen: list[CustomerEngagementChanged] = []
    try:
        await consumer.topics()  # a metadata request: learn the topic's partitions
        partitions = consumer.partitions_for_topic(settings.topic_engagement) or set()
        consumer.assign([TopicPartition(settings.topic_engagement, p) for p in partitions])
        await consumer.seek_to_beginning()
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(seen):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not published within {timeout}s; seen {seen}")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    change = CustomerEngagementChanged.model_validate_json(r.value)
                    if change.tenant == tenant:
                        assert r.key == change.kafka_key()
                        seen.append(change)
    finally:
        await consumer.stop()
    return seen


def customers(changes: list[CustomerEngagementChanged]) -> set[str]:
    return {c.customer_id for c in changes}


async def pending_version(db: Database, tenant: str, customer: str) -> tuple[int, int] | None:
    async with db.session() as session:
        row = (
            await session.execute(
                text(
                    "SELECT version, published_version FROM alerts.engagement_change "
                    "WHERE tenant_id = :t AND customer_id = :c"
                ),
                {"t": tenant, "c": customer},
            )
        ).first()
    return (row[0], row[1]) if row else None


async def test_a_change_is_published_after_its_commit_never_before_never_if_rolled_back(
    own: AlertsSettings,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = (await make_tenant()).id
    relay = relay_for(own, db, producer)

    async def failing_transaction() -> None:
        async with db.session() as session:
            await mark_changed(await raw_connection(session), [(tenant, "rolled-back")])
            raise RuntimeError("the change's transaction fails")

    with pytest.raises(RuntimeError):
        await failing_transaction()
    await apply(db, [usage(tenant=tenant, customer="scored", at=T0, active=5)], now=T0)

    async with db.session() as session:  # a change still in flight …
        await mark_changed(await raw_connection(session), [(tenant, "in-flight")])
        await relay.drain()
        first = await published(own, tenant, lambda seen: "scored" in customers(seen))
        assert customers(first) == {"scored"}  # … is not published before its commit
    await relay.drain()
    after = await published(own, tenant, lambda seen: "in-flight" in customers(seen))
    assert customers(after) == {"scored", "in-flight"}
    assert await pending_version(db, tenant, "rolled-back") is None

    scored = next(c for c in after if c.customer_id == "scored")
    assert scored.score is not None
    assert scored.scored_at == T0
    assert scored.threshold == 40.0  # the default model's
    assert scored.alert is None
    assert sum(scored.contributions.values()) == pytest.approx(scored.score, abs=0.05)
    version = await pending_version(db, tenant, "scored")
    assert version is not None
    assert version[0] == version[1] == scored.version


async def test_a_change_the_broker_does_not_acknowledge_stays_pending_until_published(
    own: AlertsSettings,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = (await make_tenant()).id
    await apply(db, [usage(tenant=tenant, customer="c1", at=T0, active=5)], now=T0)
    impatient = own.model_copy(
        update={"engagement_publish_timeout_seconds": 1e-6, "engagement_poll_seconds": 0.05}
    )
    failures = sample("waypoint_alerts_engagement_publish_failures_total")
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay_for(impatient, db, producer).run(stop))
    try:

        async def failed_twice() -> bool:
            return sample("waypoint_alerts_engagement_publish_failures_total") >= failures + 2

        await eventually(failed_twice)
    finally:
        stop.set()
        await asyncio.wait_for(relaying, 30)
    version = await pending_version(db, tenant, "c1")
    assert version is not None
    assert version[0] > version[1]

    relay = relay_for(own, db, producer)
    assert await relay.drain() >= 1
    await published(own, tenant, lambda seen: "c1" in customers(seen))
    version = await pending_version(db, tenant, "c1")
    assert version is not None
    assert version[0] == version[1]


async def test_the_decay_scheduler_publishes_a_score_that_moved(
    own: AlertsSettings,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = (await make_tenant()).id
    await apply(db, [usage(tenant=tenant, customer="quiet", at=T0, active=10) for _ in range(2)],
                now=T0)  # fmt: skip
    relay = relay_for(own, db, producer)
    await relay.drain()
    first = (await published(own, tenant, lambda seen: len(seen) >= 1))[-1]
    rescored = await rescore_due(
        db, now=T0 + timedelta(days=7), stale_after=timedelta(hours=1), tenant_id=tenant
    )
    assert rescored == 1
    await relay.drain()
    seen = await published(own, tenant, lambda seen: len({c.version for c in seen}) >= 2)
    latest = max(seen, key=lambda c: c.version)
    assert latest.version > first.version
    assert latest.scored_at == T0 + timedelta(days=7)
    assert latest.score is not None
    assert first.score is not None
    assert latest.score <= first.score - 1.0  # silence lowered it, and journey hears of it


async def test_an_alert_opened_acknowledged_and_resolved_by_hand_is_published_each_time(
    own: AlertsSettings,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = await make_tenant(scopes=["alerts:read", "alerts:write"])
    relay = relay_for(own, db, producer)
    async with app_client(create_app(own)) as api:
        put = await api.put("/v1/engagement-model", json=MODEL, headers=tenant.headers)
        assert put.status_code == 200, put.text
        await apply(db, [usage(tenant=tenant.id, customer="c", at=T0 - timedelta(hours=h),
                               active=10) for h in range(12)], now=T0)  # fmt: skip
        late = T0 + timedelta(days=28)
        await apply(db, [usage(tenant=tenant.id, customer="c", at=late, active=2)], now=late)
        await relay.drain()

        def last(seen: list[CustomerEngagementChanged]) -> CustomerEngagementChanged:
            return max(seen, key=lambda c: c.version)

        def alert_status(status: str | None) -> Callable[[list[Any]], bool]:
            def holds(seen: list[CustomerEngagementChanged]) -> bool:
                current = last(seen).alert if seen else None
                return bool(seen) and (current.status if current else None) == status

            return holds

        opened = last(await published(own, tenant.id, alert_status("open")))
        assert opened.alert is not None
        assert opened.score is not None
        assert opened.score < 50
        assert opened.threshold == 50
        assert opened.alert.rules
        assert "below_threshold" in opened.alert.rules
        assert opened.alert.summary
        assert "threshold 50" in opened.alert.summary

        alert_id = opened.alert.alert_id
        ack = await api.post(f"/v1/alerts/{alert_id}/ack", headers=tenant.headers)
        assert ack.status_code == 200, ack.text
        await relay.drain()
        acked = last(await published(own, tenant.id, alert_status("acknowledged")))
        assert acked.version > opened.version
        assert acked.alert is not None
        assert acked.alert.acknowledged_at is not None

        done = await api.post(f"/v1/alerts/{alert_id}/resolve", headers=tenant.headers)
        assert done.status_code == 200, done.text
        await relay.drain()
        resolved = last(await published(own, tenant.id, alert_status(None)))
        assert resolved.version > acked.version
        assert resolved.score == acked.score  # the score stays; the alert is gone


async def test_a_change_made_while_its_row_is_being_published_is_published_next(
    own: AlertsSettings,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = (await make_tenant()).id
    await apply(db, [usage(tenant=tenant, customer="busy", at=T0, active=5)], now=T0)
    relay = relay_for(own, db, producer)
    async with db.session() as session:  # a relay claims the row (and is publishing it) …
        rows = [
            r
            for r in await (await raw_connection(session)).fetch(_CLAIM, 10_000, 30.0)
            if r["tenant_id"] == tenant
        ]
    assert [r["customer_id"] for r in rows] == ["busy"]

    async def writer() -> None:  # … while the worker changes the customer again
        async with db.session() as session:
            await mark_changed(await raw_connection(session), [(tenant, "busy")])

    await asyncio.wait_for(writer(), 5)  # the writer does not wait for the broker
    await settle(db, rows, published=True)  # the relay's round ends with the older version
    version = await pending_version(db, tenant, "busy")
    assert version is not None
    assert version[1] == rows[0]["version"]
    assert version[0] > version[1]  # the newer change is still to publish …
    await relay.drain()
    seen = await published(own, tenant, lambda seen: bool(seen))
    assert max(c.version for c in seen) == version[0]  # … and is published next
