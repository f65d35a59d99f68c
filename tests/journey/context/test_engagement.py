"""The engagement consumer folds alerts' engagement changes into the agent's context: the
newest version wins whatever the arrival order, replays change nothing, the screen-pop cache
is invalidated, bad records are dead-lettered, and a merge keeps the survivor's engagement."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.journey.config import JourneySettings
from services.journey.context.engagement import run
from shared.events.engagement import ChurnAlert, CustomerEngagementChanged
from shared.kafka import ensure_topics, header, make_consumer
from tests.journey.conftest import cloud_event, context_when, journey_settings_for, send
from tests.support import TenantFactory, eventually, sample
from tests.support import TestTenant as Tenant  # not "Test…" here: pytest would collect it
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


@dataclass
class Scene:
    """A tenant (context:read, admin) with the journey worker and the engagement consumer
    running: its customers, the engagement changes produced for them, their context."""

    journey: httpx.AsyncClient
    producer: AIOKafkaProducer
    events: JourneySettings  # the journey worker's (a customer's events)
    folding: JourneySettings  # the engagement consumer's (engagement changes)
    tenant: Tenant

    async def customer(self) -> str:
        email = f"eng-{uuid.uuid4().hex[:8]}@x.test"
        await send(self.producer, self.events, cloud_event(
            tenant=self.tenant.id, identifiers=[{"type": "email", "value": email}]))  # fmt: skip
        ctx = await context_when(
            self.journey, self.tenant.headers, lambda c: True, identifier_type="email", value=email
        )
        return str(ctx["customer_id"])

    async def produce(self, key_customer: str, value: bytes) -> None:
        await self.producer.send_and_wait(
            self.folding.topic_engagement, value, key=f"{self.tenant.id}|{key_customer}".encode()
        )

    async def score(self, customer: str, version: int, score: float, **extra: Any) -> None:
        """An engagement change of ``customer``, on its own key."""
        await self.produce(customer, change(self.tenant.id, customer, version, score, **extra))

    async def context(self, customer: str) -> dict[str, Any]:
        r = await self.journey.get(f"/v1/customers/{customer}/context", headers=self.tenant.headers)
        body: dict[str, Any] = r.json()
        return body

    async def engaged(self, customer: str) -> dict[str, Any]:
        """``customer``'s context once it shows an engagement."""

        async def shown() -> dict[str, Any] | None:
            body = await self.context(customer)
            return body if body["engagement"] else None

        return await eventually(shown)

    async def merge(self, survivor: str, merged: str) -> None:
        r = await self.journey.post(
            "/v1/customers/merge",
            json={"survivor_id": survivor, "merged_id": merged, "reason": "same person"},
            headers=self.tenant.headers,
        )
        assert r.status_code == 200, r.text

    async def consumed(self, count: int) -> None:
        """Wait until the consumer has committed ``count`` records of the engagement topic."""
        settings = self.folding

        async def done() -> bool:
            offsets = await committed(
                settings, self.producer, settings.engagement_consumer_group,
                settings.topic_engagement,
            )  # fmt: skip
            return sum(offsets.values()) >= count

        await eventually(done, timeout=30)


@pytest.fixture
async def scene(
    journey: httpx.AsyncClient,
    journey_worker: Any,
    journey_settings: JourneySettings,
    folding: JourneySettings,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
) -> Scene:
    tenant = await make_tenant(scopes=["context:read", "admin"])
    return Scene(journey, producer, journey_settings, folding, tenant)


async def test_the_newest_engagement_wins_whatever_the_order_and_the_cache_follows(
    scene: Scene,
):
    cid = await scene.customer()
    before = await scene.context(cid)  # now cached
    assert before["engagement"] is None

    await scene.score(cid, 200, 34.5, alert=alert(34.5))

    async def shows(version: int) -> dict[str, Any] | None:
        body = await scene.context(cid)
        eng = body["engagement"]
        return body if eng and eng["version"] == version else None

    body = await eventually(lambda: shows(200))
    assert body["version"] == before["version"] + 1  # a new version, announced: not the cache's
    assert body["engagement"]["score"] == 34.5
    assert body["engagement"]["at_risk"] is True
    assert body["engagement"]["alert"]["owner"] == "olga"
    assert "At risk of churning: engagement 34.5" in body["summary"]["text"]

    # an older change arriving late, and a replay of the current one, change nothing
    await scene.score(cid, 100, 90.0)
    await scene.score(cid, 200, 90.0)
    await scene.consumed(3)
    same = await scene.context(cid)
    assert same["version"] == body["version"]
    assert same["engagement"]["score"] == 34.5
    assert same["engagement"]["alert"] is not None

    await scene.score(cid, 201, 72.0)
    recovered = await eventually(lambda: shows(201))
    assert recovered["engagement"]["alert"] is None
    assert recovered["engagement"]["at_risk"] is False
    assert recovered["summary"]["churn_risk"] is None


async def test_bad_records_are_dead_lettered_and_unknown_customers_do_not_stall(scene: Scene):
    tenant, folding = scene.tenant, scene.folding
    cid = await scene.customer()
    nobody = str(uuid.uuid4())
    marker = uuid.uuid4().hex
    unknown_before = sample("waypoint_journey_engagement_total", result="unknown_customer")
    for value in (
        f'{{"not": "an engagement change {marker}"}}'.encode(),
        change(tenant.id, f"not-a-uuid-{marker}", 5, 50.0),
        change(tenant.id, nobody, 5, 50.0),  # journey does not know this customer
        change(tenant.id, cid, 5, 61.0),
    ):
        await scene.produce(cid, value)  # one key: one partition, in order

    assert (await scene.engaged(cid))["engagement"]["score"] == 61.0

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


async def test_a_merge_keeps_the_survivors_engagement(scene: Scene):
    survivor = await scene.customer()
    merged = await scene.customer()
    await scene.score(survivor, 9, 30.0, alert=alert(30.0))
    await scene.engaged(survivor)
    await scene.merge(survivor, merged)

    async def merged_view() -> dict[str, Any] | None:  # once the API has heard of the merge
        body = await scene.context(merged)
        return body if body["customer_id"] == survivor else None

    after = await eventually(merged_view)
    assert after["customer_id"] == survivor
    assert after["merged_from"] == merged
    assert after["engagement"]["version"] == 9
    assert after["engagement"]["alert"] is not None


async def test_a_change_for_a_merged_away_customer_is_dropped_at_once_not_retried(scene: Scene):
    """Alerts may score a customer just before journey merges it away: that change names a
    customer whose context moved to the survivor. It is counted as merged_away, not retried as
    unknown, and the survivor's engagement is untouched."""
    survivor = await scene.customer()
    merged = await scene.customer()
    await scene.merge(survivor, merged)
    merged_before = sample("waypoint_journey_engagement_total", result="merged_away")
    unknown_before = sample("waypoint_journey_engagement_total", result="unknown_customer")
    await scene.score(merged, 7, 12.0)
    await scene.score(survivor, 3, 70.0)

    assert (await scene.engaged(survivor))["engagement"]["score"] == 70.0

    async def counted() -> bool:
        now = sample("waypoint_journey_engagement_total", result="merged_away")
        return now >= merged_before + 1

    await eventually(counted)
    assert sample("waypoint_journey_engagement_total", result="unknown_customer") == unknown_before
