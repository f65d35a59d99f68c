"""Sensitive values at ingest: stored and published sealed, masked on every read path, revealed
only to admin with an audit row (issue 12, item 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from sqlalchemy import text

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from shared.db import Database
from shared.privacy.masking import MASK
from tests.ingest.conftest import read_topic, stored_ids
from tests.support import TenantFactory, app_client, cloud_event, eventually, stands_alone

CARD = "4111 1111 1111 1111"


@pytest.fixture
async def client(ingest_settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(ingest_settings)) as http:
        yield http


async def _dump(db: Database, sql: str, tenant: str) -> str:
    async with db.session() as session:
        rows = (await session.execute(text(sql), {"t": tenant})).all()
    return " ".join(str(tuple(r)) for r in rows)


async def test_sensitive_values_are_sealed_at_rest_and_masked_unless_an_admin_reveals(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    db: Database,
    producer,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant = await make_tenant()
    reader = await make_tenant.key(tenant, scopes=["events:read"])
    fact = cloud_event(
        tenant=tenant.id, type="fact.collected", name="card", value=CARD, sensitive=True
    )
    message = cloud_event(
        tenant=tenant.id, type="message.received", text=f"my card is {CARD}", sensitive=True
    )
    plain = cloud_event(tenant=tenant.id, type="fact.collected", name="order", value="A-1")
    forged = cloud_event(
        tenant=tenant.id, type="fact.collected", name="pin", value=1234, sensitive=True
    )
    forged["data"]["sealed"] = {"value": "wpenc1:forged"}  # only Waypoint seals
    for event in (fact, message, plain, forged):
        await producer.send_and_wait(ingest_settings.topic_raw, orjson.dumps(event))

    async def stored() -> bool:
        return len(await stored_ids(db, tenant.id)) == 4

    await eventually(stored)

    # At rest: neither the event store nor the normalized topic holds the plaintext.
    dump = await _dump(
        db, "SELECT envelope::text FROM ingest.event WHERE tenant_id = :t", tenant.id
    )
    assert CARD not in dump
    assert not stands_alone("1234", dump)  # (the dump's UUIDs may hold any four digits)
    assert "forged" not in dump
    assert "wpenc1:" in dump
    assert "A-1" in dump
    records = await read_topic(ingest_settings, ingest_settings.topic_normalized, expect=4)
    assert all(CARD.encode() not in r.value for r in records)
    keys = await _dump(db, "SELECT wrapped FROM auth.data_key WHERE tenant_id = :t", tenant.id)
    assert keys  # the tenant's data key exists, wrapped

    # Read: masked for every reader, admin included, unless revealed.
    for key in (reader, tenant.key):
        page = await client.get("/v1/events", headers={"Authorization": f"Bearer {key}"})
        assert page.status_code == 200, page.text
        by_id = {e["id"]: e["event"]["data"] for e in page.json()["items"]}
        assert by_id[fact["id"]]["value"] == MASK
        assert by_id[message["id"]]["text"] == MASK
        assert by_id[forged["id"]]["value"] == MASK
        assert by_id[plain["id"]]["value"] == "A-1"
        assert all("sealed" not in d for d in by_id.values())

    refused = await client.get(
        "/v1/events",
        params={"reveal_sensitive": "true"},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert refused.status_code == 403
    revealed = await client.get(
        "/v1/events", params={"reveal_sensitive": "true"}, headers=tenant.headers
    )
    assert revealed.status_code == 200, revealed.text
    by_id = {e["id"]: e["event"]["data"] for e in revealed.json()["items"]}
    assert by_id[fact["id"]]["value"] == CARD
    assert by_id[message["id"]]["text"] == f"my card is {CARD}"
    assert by_id[forged["id"]]["value"] == 1234  # sealed by Waypoint, not the forged token
    audit = await _dump(
        db,
        "SELECT action, detail::text FROM auth.audit_log WHERE tenant_id = :t",
        tenant.id,
    )
    assert "events.sensitive_revealed" in audit
    assert CARD not in audit


async def test_dead_letters_keep_sensitive_values_masked(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    db: Database,
    producer,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant = await make_tenant()
    bad = cloud_event(
        tenant=tenant.id,
        type="fact.collected",
        name="card",
        value=CARD,
        sensitive=True,
        expires_at="not a time",
    )
    await producer.send_and_wait(ingest_settings.topic_raw, orjson.dumps(bad))

    async def listed() -> list:
        page = await client.get("/v1/dead-letters", headers=tenant.headers)
        return page.json()["items"]

    items = await eventually(listed)
    assert orjson.loads(items[0]["payload"])["data"]["value"] == MASK
    dump = await _dump(db, "SELECT payload FROM ingest.dead_letter WHERE tenant_id = :t", tenant.id)
    assert CARD not in dump
