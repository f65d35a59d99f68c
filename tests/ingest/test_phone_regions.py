"""Ingest reads national phone numbers in the tenant's region and refuses invalid ones."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from services.ingest.worker import run
from shared.auth.tenants import set_phone_region
from shared.db import Database
from tests.ingest.conftest import produce, read_topic
from tests.support import TenantFactory, app_client, cloud_event, eventually

RU_NATIONAL, RU_E164 = "8 (912) 345-67-89", "+79123456789"
CN_NATIONAL, CN_E164 = "138 0013 8000", "+8613800138000"


def phone_event(tenant: str, value: str) -> dict[str, Any]:
    return cloud_event(
        tenant=tenant, identifiers=[{"type": "phone", "value": value, "verified_by": "caller_id"}]
    )


@asynccontextmanager
async def running(settings: IngestSettings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop=stop))
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def stored_identifiers(db: Database, tenant: str, event_id: str) -> list[str] | None:
    async with db.session() as session:
        row = (
            await session.execute(
                text("SELECT identifiers FROM ingest.event WHERE tenant_id = :t AND event_id = :e"),
                {"t": tenant, "e": event_id},
            )
        ).first()
    return None if row is None else list(row[0])


async def dead_letter(db: Database, tenant: str, event_id: str) -> tuple[str, str] | None:
    async with db.session() as session:
        row = (
            await session.execute(
                text(
                    "SELECT reason, message FROM ingest.dead_letter "
                    "WHERE tenant_id = :t AND event_id = :e"
                ),
                {"t": tenant, "e": event_id},
            )
        ).first()
    return None if row is None else (row[0], row[1])


async def test_the_worker_reads_national_numbers_in_each_tenants_region(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
):
    # Tenant settings are cached for an hour: only a tenant the worker has not met makes it
    # re-read them (as for a tenant created while it runs).
    settings = ingest_settings.model_copy(update={"tenant_cache_seconds": 3600.0})
    ru = await make_tenant(phone_region="RU")
    us = await make_tenant()  # no region of its own: the shared default, US
    ru_event, us_bad, us_good = (
        phone_event(ru.id, RU_NATIONAL),
        phone_event(us.id, CN_NATIONAL),
        phone_event(us.id, "(415) 555-0123"),
    )
    async with running(settings):
        raw = [orjson.dumps(e) for e in (ru_event, us_bad, us_good)]
        await produce(producer, settings.topic_raw, raw)
        assert await eventually(lambda: stored_identifiers(db, ru.id, ru_event["id"])) == [
            f"phone:{RU_E164}"
        ]
        assert await eventually(lambda: stored_identifiers(db, us.id, us_good["id"])) == [
            "phone:+14155550123"
        ]
        reason, message = await eventually(lambda: dead_letter(db, us.id, us_bad["id"]))
        assert reason == "invalid_identifier"
        assert "not a valid phone number: '138 0013 8000'" in message
        assert "read in region US as +13800138000" in message
        assert await stored_identifiers(db, us.id, us_bad["id"]) is None

        # A tenant created after the worker read the tenants: its first events already use
        # its own region (under US this number would be refused).
        cn = await make_tenant(phone_region="CN")
        cn_event = phone_event(cn.id, CN_NATIONAL)
        await produce(producer, settings.topic_raw, [orjson.dumps(cn_event)])
        assert await eventually(lambda: stored_identifiers(db, cn.id, cn_event["id"])) == [
            f"phone:{CN_E164}"
        ]
        assert await dead_letter(db, cn.id, cn_event["id"]) is None

    published = await read_topic(settings, settings.topic_normalized, expect=3)
    keys = {orjson.loads(r.value)["id"]: r.key.decode() for r in published}
    assert keys[ru_event["id"]] == f"{ru.id}|phone:{RU_E164}"
    assert keys[cn_event["id"]] == f"{cn.id}|phone:{CN_E164}"
    assert us_bad["id"] not in keys


async def test_a_changed_tenant_region_applies_to_later_events(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
):
    settings = ingest_settings.model_copy(update={"tenant_cache_seconds": 0.0})
    tenant = await make_tenant()
    before, after = phone_event(tenant.id, CN_NATIONAL), phone_event(tenant.id, CN_NATIONAL)
    async with running(settings):
        await produce(producer, settings.topic_raw, [orjson.dumps(before)])
        reason, _ = await eventually(lambda: dead_letter(db, tenant.id, before["id"]))
        assert reason == "invalid_identifier"
        async with db.session() as session:
            await set_phone_region(session, tenant.id, "CN")
        await produce(producer, settings.topic_raw, [orjson.dumps(after)])
        assert await eventually(lambda: stored_identifiers(db, tenant.id, after["id"])) == [
            f"phone:{CN_E164}"
        ]


@pytest.fixture
async def client(ingest_settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(ingest_settings)) as http:
        yield http


async def test_http_events_and_searches_use_the_tenants_region(
    client: httpx.AsyncClient,
    db: Database,
    make_tenant: TenantFactory,
    ingest_settings: IngestSettings,
    worker: object,
):
    ru = await make_tenant(scopes=["events:write", "events:read"], phone_region="RU")
    us = await make_tenant(scopes=["events:write"])
    event = phone_event(ru.id, RU_NATIONAL)
    response = await client.post("/v1/events", json=event, headers=ru.headers)
    assert response.status_code == 202, response.text
    [queued] = await read_topic(ingest_settings, ingest_settings.topic_raw, expect=1)
    # Queued as validated, so no worker can read it in another region than the API did.
    assert orjson.loads(queued.value)["data"]["identifiers"][0]["value"] == RU_E164

    async def found() -> list[str]:
        page = await client.get(
            "/v1/events", params={"identifier": RU_NATIONAL}, headers=ru.headers
        )
        assert page.status_code == 200, page.text
        return [e["id"] for e in page.json()["items"]]

    assert await eventually(found) == [event["id"]]

    refused = await client.post(
        "/v1/events", json=phone_event(us.id, CN_NATIONAL), headers=us.headers
    )
    assert refused.status_code == 422
    [result] = refused.json()["detail"]
    assert result["reason"] == "invalid_identifier"
    assert result["message"].startswith("data.identifiers.0: not a valid phone number")


async def test_segment_phone_traits_are_read_in_the_tenants_region(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ingest_settings: IngestSettings
):
    cn = await make_tenant(scopes=["events:write"], phone_region="CN")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{cn.key}:".encode()).decode()}
    message = {
        "messageId": f"m-{uuid.uuid4().hex}",
        "userId": "u-1",
        "traits": {"phone": CN_NATIONAL},
    }
    response = await client.post("/v1/identify", json=message, headers=auth)
    assert response.status_code == 200, response.text
    [queued] = await read_topic(ingest_settings, ingest_settings.topic_raw, expect=1)
    identifiers = orjson.loads(queued.value)["data"]["identifiers"]
    assert {"type": "phone", "value": CN_E164, "verified_by": "self_asserted"} in identifiers
