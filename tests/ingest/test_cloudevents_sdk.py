"""The CloudEvents bindings to the letter, with events built by the official ``cloudevents`` SDK
(not by hand): HTTP structured, HTTP binary (percent-encoded ``ce-*`` headers, §3.1.3.2) and
Kafka binary; every missing required attribute is named; the normalized topic says what it
carries in ``content-type``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from tests.ingest.conftest import read_topic
from tests.support import TenantFactory, app_client

# Characters the HTTP binding must percent-encode (space, '"', '%') and non-ASCII text.
SOURCE = 'cloudevents sdk/test "quoted" 100%'
SUBJECT = "Café ✓ naïve"


@pytest.fixture
async def client(ingest_settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(ingest_settings)) as http:
        yield http


def sdk_event(tenant: str, now: datetime, **attributes: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": f"sdk-{uuid.uuid4().hex[:12]}",
            "type": "case.opened",
            "source": SOURCE,
            "subject": SUBJECT,
            "time": now - timedelta(minutes=3),
            "datacontenttype": "application/json",
            "tenant": tenant,
            **attributes,
        },
        data={"identifiers": [{"type": "crm_id", "value": "C-77"}], "case_id": "K-77"},
    )


async def test_http_structured_mode_from_the_sdk(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    ingest_settings: IngestSettings,
    now: datetime,
):
    tenant = await make_tenant(scopes=["events:write"])
    event = sdk_event(tenant.id, now)
    message = ce_http.to_structured_event(event)
    assert message.headers["content-type"].startswith("application/cloudevents+json")
    r = await client.post(
        "/v1/events", content=message.body, headers={**tenant.headers, **message.headers}
    )
    assert r.status_code == 202, r.text
    [queued] = await read_topic(ingest_settings, ingest_settings.topic_raw, expect=1)
    stored = orjson.loads(queued.value)
    assert (stored["id"], stored["source"], stored["subject"]) == (event.get_id(), SOURCE, SUBJECT)


async def test_http_binary_mode_headers_are_percent_decoded(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    ingest_settings: IngestSettings,
    now: datetime,
):
    tenant = await make_tenant(scopes=["events:write"])
    event = sdk_event(tenant.id, now)
    message = ce_http.to_binary_event(event)
    assert message.headers["ce-source"] != SOURCE  # the SDK did percent-encode it
    assert "%20" in message.headers["ce-source"]
    r = await client.post(
        "/v1/events", content=message.body, headers={**tenant.headers, **message.headers}
    )
    assert r.status_code == 202, r.text
    [queued] = await read_topic(ingest_settings, ingest_settings.topic_raw, expect=1)
    stored = orjson.loads(queued.value)
    assert (stored["source"], stored["subject"], stored["tenant"]) == (SOURCE, SUBJECT, tenant.id)
    assert stored["data"]["case_id"] == "K-77"
    # and the SDK reads back what it sent
    again = ce_http.from_binary_event(message)
    assert again.get_source() == SOURCE


async def test_kafka_binary_mode_from_the_sdk_is_published_with_a_content_type(
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
    ingest_settings: IngestSettings,
    worker: object,
    now: datetime,
):
    tenant = await make_tenant(scopes=["events:write"])
    event = sdk_event(tenant.id, now)
    message = ce_kafka.to_binary_event(event)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    await producer.send_and_wait(
        ingest_settings.topic_raw,
        value=message.value,
        key=key,
        headers=list(message.headers.items()),
    )
    [published] = await read_topic(ingest_settings, ingest_settings.topic_normalized, expect=1)
    normalized = orjson.loads(published.value)
    assert (normalized["id"], normalized["source"]) == (event.get_id(), SOURCE)
    assert normalized["subject"] == SUBJECT
    headers = dict(published.headers)
    assert headers["content-type"].startswith(b"application/cloudevents+json")
    # a generic CloudEvents consumer reads the normalized record as it is
    parsed = ce_kafka.from_kafka_event(
        ce_kafka.KafkaMessage(headers=headers, key=published.key, value=published.value)
    )
    assert parsed.get_id() == event.get_id()
    assert parsed.get_type() == "case.opened"


async def test_every_missing_required_attribute_is_named(
    client: httpx.AsyncClient, make_tenant: TenantFactory, now: datetime
):
    tenant = await make_tenant(scopes=["events:write"])
    body = {"specversion": "1.0", "data": {"identifiers": [{"type": "crm_id", "value": "C-1"}]}}
    r = await client.post(
        "/v1/events",
        content=orjson.dumps(body),
        headers={**tenant.headers, "content-type": "application/cloudevents+json"},
    )
    assert r.status_code == 422, r.text
    [result] = r.json()["detail"]
    assert result["reason"] == "missing_attribute"
    for name in ("'id'", "'source'", "'type'", "'time'"):
        assert name in result["message"], result["message"]
    assert "'tenant'" not in result["message"]  # the key's tenant fills it in

    binary = {
        **tenant.headers,
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-type": "case.opened",
    }
    r = await client.post("/v1/events", json={"case_id": "K"}, headers=binary)
    assert r.status_code == 422, r.text
    message = r.json()["detail"][0]["message"]
    assert all(name in message for name in ("'id'", "'source'", "'time'")), message
