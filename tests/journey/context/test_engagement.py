"""The engagement consumer folds alerts' engagement changes into the agent's context: the
newest version wins whatever the arrival order, replays change nothing, the screen-pop cache
is invalidated, bad records are dead-lettered, and a merge keeps the survivor's engagement."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.journey.config import JourneySettings
from services.journey.context.engagement import run
from shared.events.engagement import ChurnAlert, CustomerEngagementChanged
from shared.kafka import ensure_topics, header, make_consumer
from tests.ingest.conftest import sample
from tests.journey.conftest import cloud_event, context_when, journey_settings_for, send
from tests.support import TenantFactory, eventually
from tests.topics import committed


@pytest.fixture
async def consumer_settings(settings_overrides: dict[str, Any]) -> JourneySettings:
    run_id = uuid.uuid4().hex[:8]
    settings = journey_settings_for(
        settings_overrides,
        topic_engagement=f"journey-eng-{run_id}.engagement",
        topic_dead_letter=f"journey-eng-{run_id}.deadletter",
        engagement_consumer_group=f"journey-eng-{run_id}",
        engagement_unknown_retries=1,
    )
    await ensure_topics(settings, [settings.topic_engagement, settings.topic_dead_letter])
    return settings


@pytest.fixture
async def folding(consumer_settings: JourneySettings, db: Any) -> AsyncIterator[JourneySettings]:
    """The engagement consumer running in this event loop."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(consumer_settings, stop=stop))
    yield consumer_settings
    stop.set()
    await asyncio.wait_for(task, 30)


def change(tenant: str, customer: str, version: int, score: float, **extra: Any) -> bytes:
    return CustomerEngagementChanged(
        tenant=tenant,
        customer_id=customer,
        version=version,
        changed_at=datetime.now(UTC),
        score=score,
        scored_at=datetime.now(UTC),
        segment="default",
        threshold=40.0,
        contributions={"activity": score},
        **extra,
    ).to_json()


def alert(score: float) -> ChurnAlert:
    return ChurnAlert(
        alert_id=str(uuid.uuid4()),
        status="open",
        rules=["below_threshold"],
        score=score,
        threshold=40.0,
        opened_at=datetime.now(UTC),
        owner="olga",
        summary=f"Engagement {score} vs threshold 40",
    )


async def customer(journey: httpx.AsyncClient, tenant: Any, producer: Any, settings: Any) -> str:
    email = f"eng-{uuid.uuid4().hex[:8]}@x.test"
    await send(producer, settings, cloud_event(
        tenant=tenant.id, identifiers=[{"type": "email", "value": email}]))  # fmt: skip
    ctx = await context_when(
        journey, tenant.headers, lambda c: True, identifier_type="email", value=email
    )
    return str(ctx["customer_id"])


async def produce(
    producer: AIOKafkaProducer, settings: JourneySettings, tenant: str, customer: str, value: bytes
) -> None:
    await producer.send_and_wait(
        settings.topic_engagement, value, key=f"{tenant}|{customer}".encode()
    )


async def consumed(producer: AIOKafkaProducer, settings: JourneySettings, count: int) -> None:
    """Wait until the consumer has committed ``count`` records of the engagement topic."""

    async def done() -> bool:
        offsets = await committed(
            settings, producer, settings.engagement_consumer_group, settings.topic_engagement
        )
        return sum(offsets.values()) >= count

    await eventually(done, timeout=30)


async def test_the_newest_engagement_wins_whatever_the_order_and_the_cache_follows(
    journey: httpx.AsyncClient,
    journey_worker: Any,
    journey_settings: JourneySettings,
    folding: JourneySettings,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = await make_tenant(scopes=["context:read"])
    cid = await customer(journey, tenant, producer, journey_settings)
    url = f"/v1/customers/{cid}/context"
    before = (await journey.get(url, headers=tenant.headers)).json()  # now cached
    assert before["engagement"] is None

    await produce(producer, folding, tenant.id, cid, change(tenant.id, cid, 200, 34.5,
                                                            alert=alert(34.5)))  # fmt: skip

    async def shows(version: int) -> dict[str, Any] | None:
        body = (await journey.get(url, headers=tenant.headers)).json()
        eng = body["engagement"]
        return body if eng and eng["version"] == version else None

    body = await eventually(lambda: shows(200))
    assert body["version"] == before["version"] + 1  # a new version, announced: not the cache's
    assert body["engagement"]["score"] == 34.5
    assert body["engagement"]["at_risk"] is True
    assert body["engagement"]["alert"]["owner"] == "olga"
    assert "At risk of churning: engagement 34.5" in body["summary"]["text"]

    # an older change arriving late, and a replay of the current one, change nothing
    await produce(producer, folding, tenant.id, cid, change(tenant.id, cid, 100, 90.0))
    await produce(producer, folding, tenant.id, cid, change(tenant.id, cid, 200, 90.0))
    await consumed(producer, folding, 3)
    same = (await journey.get(url, headers=tenant.headers)).json()
    assert same["version"] == body["version"]
    assert same["engagement"]["score"] == 34.5
    assert same["engagement"]["alert"] is not None

    await produce(producer, folding, tenant.id, cid, change(tenant.id, cid, 201, 72.0))
    recovered = await eventually(lambda: shows(201))
    assert recovered["engagement"]["alert"] is None
    assert recovered["engagement"]["at_risk"] is False
    assert recovered["summary"]["churn_risk"] is None


async def test_bad_records_are_dead_lettered_and_unknown_customers_do_not_stall(
    journey: httpx.AsyncClient,
    journey_worker: Any,
    journey_settings: JourneySettings,
    folding: JourneySettings,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = await make_tenant(scopes=["context:read"])
    cid = await customer(journey, tenant, producer, journey_settings)
    nobody = str(uuid.uuid4())
    marker = uuid.uuid4().hex
    unknown_before = sample("waypoint_journey_engagement_total", result="unknown_customer")
    for value in (
        f'{{"not": "an engagement change {marker}"}}'.encode(),
        change(tenant.id, f"not-a-uuid-{marker}", 5, 50.0),
        change(tenant.id, nobody, 5, 50.0),  # journey does not know this customer
        change(tenant.id, cid, 5, 61.0),
    ):
        await produce(producer, folding, tenant.id, cid, value)  # one key: one partition, in order

    async def applied() -> dict[str, Any] | None:
        r = await journey.get(f"/v1/customers/{cid}/context", headers=tenant.headers)
        return r.json() if r.json()["engagement"] else None

    assert (await eventually(applied))["engagement"]["score"] == 61.0

    async def counted_unknown() -> bool:
        now = sample("waypoint_journey_engagement_total", result="unknown_customer")
        return now >= unknown_before + 1

    await eventually(counted_unknown)
    dead = make_consumer(folding, folding.topic_dead_letter, group_id=f"dl-{marker}")
    await dead.start()
    reasons: dict[str, str] = {}
    try:
        for _ in range(100):
            for records in (await dead.getmany(timeout_ms=200)).values():
                for r in records:
                    if marker.encode() in r.value:
                        reasons[r.value.decode()[:20]] = header(r.headers, "waypoint-error") or ""
                        assert (
                            header(r.headers, "waypoint-reason") == "journey_engagement_unparsable"
                        )
            if len(reasons) == 2:
                break
    finally:
        await dead.stop()
    assert len(reasons) == 2
    assert any("not a journey customer id" in why for why in reasons.values())


async def test_a_merge_keeps_the_survivors_engagement(
    journey: httpx.AsyncClient,
    journey_worker: Any,
    journey_settings: JourneySettings,
    folding: JourneySettings,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = await make_tenant(scopes=["context:read", "admin"])
    survivor = await customer(journey, tenant, producer, journey_settings)
    merged = await customer(journey, tenant, producer, journey_settings)
    await produce(producer, folding, tenant.id, survivor, change(tenant.id, survivor, 9, 30.0,
                                                                 alert=alert(30.0)))  # fmt: skip

    async def scored() -> bool:
        r = await journey.get(f"/v1/customers/{survivor}/context", headers=tenant.headers)
        return bool(r.json()["engagement"])

    await eventually(scored)
    r = await journey.post(
        "/v1/customers/merge",
        json={"survivor_id": survivor, "merged_id": merged, "reason": "same person"},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text

    async def merged_view() -> dict[str, Any] | None:  # once the API has heard of the merge
        r = await journey.get(f"/v1/customers/{merged}/context", headers=tenant.headers)
        return r.json() if r.json()["customer_id"] == survivor else None

    after = await eventually(merged_view)
    assert after["customer_id"] == survivor
    assert after["merged_from"] == merged
    assert after["engagement"]["version"] == 9
    assert after["engagement"]["alert"] is not None


async def test_a_change_for_a_merged_away_customer_is_dropped_at_once_not_retried(
    journey: httpx.AsyncClient,
    journey_worker: Any,
    journey_settings: JourneySettings,
    folding: JourneySettings,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    """Alerts may score a customer just before journey merges it away: that change names a
    customer whose context moved to the survivor. It is counted as merged_away, not retried as
    unknown, and the survivor's engagement is untouched."""
    tenant = await make_tenant(scopes=["context:read", "admin"])
    survivor = await customer(journey, tenant, producer, journey_settings)
    merged = await customer(journey, tenant, producer, journey_settings)
    r = await journey.post(
        "/v1/customers/merge",
        json={"survivor_id": survivor, "merged_id": merged, "reason": "same person"},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    merged_before = sample("waypoint_journey_engagement_total", result="merged_away")
    unknown_before = sample("waypoint_journey_engagement_total", result="unknown_customer")
    await produce(producer, folding, tenant.id, merged, change(tenant.id, merged, 7, 12.0))
    await produce(producer, folding, tenant.id, survivor, change(tenant.id, survivor, 3, 70.0))

    async def survivor_scored() -> dict[str, Any] | None:
        r = await journey.get(f"/v1/customers/{survivor}/context", headers=tenant.headers)
        return r.json() if r.json()["engagement"] else None

    assert (await eventually(survivor_scored))["engagement"]["score"] == 70.0

    async def counted() -> bool:
        now = sample("waypoint_journey_engagement_total", result="merged_away")
        return now >= merged_before + 1

    await eventually(counted)
    assert sample("waypoint_journey_engagement_total", result="unknown_customer") == unknown_before
