"""Through the whole pipeline: raw topic → ingest worker → normalized topic → journey."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from services.ingest.config import IngestSettings
from services.ingest.worker import run as run_ingest
from tests.journey.conftest import cloud_event, context_when


async def test_a_raw_event_reaches_the_agent_context_through_ingest(
    journey, journey_worker, producer, journey_settings, settings_overrides, make_tenant
):
    tenant = await make_tenant(scopes=["context:read"])
    stop = asyncio.Event()
    ingest = asyncio.create_task(
        run_ingest(
            IngestSettings(
                **{
                    **settings_overrides,
                    "consumer_group": f"ingest-e2e-{uuid.uuid4().hex[:8]}",
                    "session_timeout_ms": 6000,
                }
            ),
            stop=stop,
        )
    )
    try:
        phone = "+44 20 7946 0958"
        raw = cloud_event(
            tenant=tenant.id,
            type="fact.collected",
            identifiers=[{"type": "phone", "value": phone, "verified_by": "otp"}],
            channel="sms",
            name="delivery_address",
            value="221B Baker Street",
        )
        await producer.send_and_wait(journey_settings.topic_raw, orjson.dumps(raw))
        ctx = await context_when(
            journey,
            tenant.headers,
            lambda c: bool(c["facts"]),
            identifier_type="phone",
            value="+442079460958",
            timeout=60,
        )
        assert ctx["facts"][0]["value"] == "221B Baker Street"
        assert ctx["facts"][0]["event_id"] == raw["id"]
        assert ctx["identities"][0]["verified_by"] == "otp"
    finally:
        stop.set()
        await asyncio.wait_for(ingest, 30)
