"""National phone numbers end to end: raw topic → ingest worker → journey worker → screen pop,
with the tenant's own region or the shared WAYPOINT_PHONE_REGION on both sides."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.config import IngestSettings
from services.ingest.worker import run as run_ingest
from services.journey.app import create_app
from services.journey.config import JourneySettings
from shared.db import Database
from tests.journey.conftest import cloud_event, context_when, journey_settings_for
from tests.support import TenantFactory, app_client, eventually

READ = ["context:read"]


@asynccontextmanager
async def ingest_worker(
    overrides: dict[str, Any], journey_settings: JourneySettings, **extra: Any
) -> AsyncIterator[IngestSettings]:
    """An ingest worker on a raw topic of its own, publishing to the journey worker's topic."""
    run_id = uuid.uuid4().hex[:8]
    settings = IngestSettings(
        **{
            **overrides,
            "topic_raw": f"phones-{run_id}.raw",
            "topic_dead_letter": f"phones-{run_id}.deadletter",
            "topic_normalized": journey_settings.topic_normalized,
            "consumer_group": f"ingest-phones-{run_id}",
            "session_timeout_ms": 6000,
            "tenant_refresh_seconds": 0.0,
            **extra,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingest(settings, stop=stop))
    try:
        yield settings
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def fact(tenant: str, phone: str, verified_by: str, name: str) -> dict[str, Any]:
    return cloud_event(
        tenant=tenant,
        type="fact.collected",
        identifiers=[{"type": "phone", "value": phone, "verified_by": verified_by}],
        channel="phone",
        name=name,
        value=f"{name} of {phone}",
    )


async def screen_pop(
    client: httpx.AsyncClient, tenant: Any, value: str, *, facts: int
) -> dict[str, Any]:
    return await context_when(
        client,
        tenant.headers,
        lambda c: len(c["facts"]) == facts,
        identifier_type="phone",
        value=value,
        timeout=60,
    )


async def test_national_numbers_link_and_screen_pop_in_each_tenants_region(
    journey: httpx.AsyncClient,
    journey_worker: object,
    journey_settings: JourneySettings,
    settings_overrides: dict[str, Any],
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
    db: Database,
):
    ru = await make_tenant(scopes=READ, phone_region="RU")
    cn = await make_tenant(scopes=READ, phone_region="CN")
    us = await make_tenant(scopes=READ)  # the shared default region, US
    cases = [
        (ru, "8 (912) 345-67-89", "+7 912 345-67-89", "+79123456789"),
        (cn, "138 0013 8000", "+86 138 0013 8000", "+8613800138000"),
    ]
    refused = fact(us.id, "138 0013 8000", "caller_id", "plan")
    async with ingest_worker(settings_overrides, journey_settings) as ingest:
        sent = [refused]
        for tenant, national, international, _ in cases:
            sent += [
                fact(tenant.id, national, "caller_id", "plan"),
                fact(tenant.id, international, "otp", "address"),
            ]
        for event in sent:
            await producer.send_and_wait(ingest.topic_raw, orjson.dumps(event))

        for tenant, national, international, e164 in cases:
            # Both events, one per written form, reached one customer, found by either form.
            ctx = await screen_pop(journey, tenant, national, facts=2)
            assert [i["value"] for i in ctx["identities"]] == [e164]
            other = await screen_pop(journey, tenant, international, facts=2)
            assert other["customer_id"] == ctx["customer_id"]
            hint = await journey.get(
                "/v1/route-hint",
                params={"identifier_type": "phone", "value": national},
                headers=tenant.headers,
            )
            assert hint.status_code == 200, hint.text
            assert (hint.json()["known"], hint.json()["customer_id"]) == (
                True,
                ctx["customer_id"],
            )

        async def refused_reason() -> str | None:
            async with db.session() as session:
                return (
                    await session.execute(
                        text(
                            "SELECT reason FROM ingest.dead_letter "
                            "WHERE tenant_id = :t AND event_id = :e"
                        ),
                        {"t": us.id, "e": refused["id"]},
                    )
                ).scalar()

        assert await eventually(refused_reason) == "invalid_identifier"

    pop = await journey.get(
        "/v1/context",
        params={"identifier_type": "phone", "value": "138 0013 8000"},
        headers=us.headers,
    )
    assert pop.status_code == 400
    assert "not a valid phone number" in pop.json()["detail"]


async def test_the_shared_region_setting_serves_ingest_and_look_ups_alike(
    journey: httpx.AsyncClient,
    journey_worker: object,
    journey_settings: JourneySettings,
    settings_overrides: dict[str, Any],
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = await make_tenant(scopes=READ)  # no region of its own
    national = "8 (912) 345-67-89"
    ru_journey = create_app(journey_settings_for(settings_overrides, phone_region="RU"))
    async with (
        ingest_worker(settings_overrides, journey_settings, phone_region="RU") as ingest,
        app_client(ru_journey) as client,
    ):
        await producer.send_and_wait(
            ingest.topic_raw, orjson.dumps(fact(tenant.id, national, "caller_id", "plan"))
        )
        ctx = await screen_pop(client, tenant, national, facts=1)
        assert [i["value"] for i in ctx["identities"]] == ["+79123456789"]
    # A journey API left on US reads the same digits as another number: no one (or worse).
    other = await journey.get(
        "/v1/context",
        params={"identifier_type": "phone", "value": national},
        headers=tenant.headers,
    )
    assert other.status_code in {400, 404}
