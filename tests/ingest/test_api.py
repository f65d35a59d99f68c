import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import orjson
import pytest

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from shared.db import Database
from shared.events.schema import SCHEMA_PATH
from tests.ingest.conftest import read_topic, stored_ids
from tests.support import TenantFactory, app_client, cloud_event, eventually

BATCH = {"content-type": "application/cloudevents-batch+json"}


@pytest.fixture
async def client(ingest_settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        ingest_settings.model_copy(update={"max_body_bytes": 64 * 1024, "max_batch_items": 50})
    )
    async with app_client(app) as http:
        yield http


async def test_posted_events_are_queued_stored_and_readable_by_customer(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    db: Database,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant = await make_tenant(scopes=["events:write", "events:read"])
    event = cloud_event(
        tenant=tenant.id, identifiers=[{"type": "phone", "value": "+1 415 555 0199"}]
    )
    del event["tenant"]  # filled in from the key
    response = await client.post(
        "/v1/events",
        content=orjson.dumps(event),
        headers={**tenant.headers, "content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["results"] == [{"index": 0, "id": event["id"], "status": "accepted"}]

    async def stored() -> bool:
        return await stored_ids(db, tenant.id) == [event["id"]]

    await eventually(stored)
    for customer in ("phone:+14155550199", "(415) 555-0199", "+14155550199"):
        page = await client.get(
            "/v1/events", params={"identifier": customer}, headers=tenant.headers
        )
        assert page.status_code == 200, page.text
        assert [e["id"] for e in page.json()["items"]] == [event["id"]], customer
        assert page.json()["items"][0]["event"]["tenant"] == tenant.id


async def test_batch_reports_each_item_and_accepts_the_valid_ones(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ingest_settings: IngestSettings
):
    tenant = await make_tenant(scopes=["events:write"])
    good = cloud_event(tenant=tenant.id)
    bad_type = cloud_event(tenant=tenant.id, type="case.opened")  # case_id missing
    other_tenant = cloud_event(tenant="someone-else")
    response = await client.post(
        "/v1/events",
        content=orjson.dumps([good, bad_type, other_tenant, "nope"]),
        headers={**tenant.headers, **BATCH},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 3)
    results = body["results"]
    assert results[0] == {"index": 0, "id": good["id"], "status": "accepted"}
    assert results[1]["reason"] == "schema"
    assert "case_id" in results[1]["message"]
    assert results[2]["reason"] == "tenant_mismatch"
    assert results[3]["reason"] == "schema"

    queued = await read_topic(ingest_settings, ingest_settings.topic_raw, expect=1)
    assert [orjson.loads(r.value)["id"] for r in queued] == [good["id"]]


async def test_http_binary_mode_takes_attributes_from_ce_headers(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    ingest_settings: IngestSettings,
    now: datetime,
):
    tenant = await make_tenant(scopes=["events:write"])
    headers = {
        **tenant.headers,
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "bin-1",
        "ce-source": "crm",
        "ce-type": "case.opened",
        "ce-time": (now - timedelta(hours=4)).isoformat(),
    }
    data = {"identifiers": [{"type": "crm_id", "value": "C-9"}], "case_id": "K-1"}
    response = await client.post("/v1/events", json=data, headers=headers)
    assert response.status_code == 202, response.text
    [queued] = await read_topic(ingest_settings, ingest_settings.topic_raw, expect=1)
    event = orjson.loads(queued.value)
    assert (event["id"], event["type"], event["tenant"]) == ("bin-1", "case.opened", tenant.id)
    assert event["data"] == data
    bad = await client.post(
        "/v1/events", content=b"<xml/>", headers={**headers, "content-type": "text/xml"}
    )
    assert bad.status_code in {400, 415}


async def test_nothing_valid_is_422_and_another_tenant_is_403(
    client: httpx.AsyncClient, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["events:write"])
    unknown = cloud_event(tenant=tenant.id, type="contact.teleported")
    response = await client.post("/v1/events", json=unknown, headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert response.json()["detail"][0]["reason"] == "unknown_type"
    assert "contact.teleported" in response.json()["detail"][0]["message"]

    both_bad = [unknown, cloud_event(tenant=tenant.id, time="2999-01-01T00:00:00Z")]
    response = await client.post(
        "/v1/events", content=orjson.dumps(both_bad), headers={**tenant.headers, **BATCH}
    )
    assert response.status_code == 422
    assert [d["reason"] for d in response.json()["detail"]] == ["unknown_type", "future_time"]

    foreign = cloud_event(tenant="not-" + tenant.id)
    response = await client.post("/v1/events", json=foreign, headers=tenant.headers)
    assert response.status_code == 403
    assert response.json()["detail"][0]["reason"] == "tenant_mismatch"


async def test_bad_requests_are_refused_with_a_clear_status(
    client: httpx.AsyncClient, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["events:write"])
    reader = await make_tenant(scopes=["events:read"])
    event = cloud_event(tenant=tenant.id)
    assert (await client.post("/v1/events", json=event)).status_code == 401
    bad_key = {"Authorization": "Bearer wp_nope"}
    assert (await client.post("/v1/events", json=event, headers=bad_key)).status_code == 401
    wrong_scope = await client.post("/v1/events", json=event, headers=reader.headers)
    assert wrong_scope.status_code == 403
    assert "events:write" in wrong_scope.json()["detail"]

    not_json = await client.post("/v1/events", content=b"{nope", headers=tenant.headers)
    assert not_json.status_code == 400
    assert "JSON" in not_json.json()["detail"]
    text_plain = {**tenant.headers, "content-type": "text/plain"}
    assert (await client.post("/v1/events", content=b"{}", headers=text_plain)).status_code == 415
    empty = await client.post("/v1/events", content=b"[]", headers={**tenant.headers, **BATCH})
    assert empty.status_code == 400

    big = orjson.dumps(cloud_event(tenant=tenant.id, text="x" * 70_000))
    declared = await client.post("/v1/events", content=big, headers=tenant.headers)
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b" " * 4096

    streamed = await client.post("/v1/events", content=chunks(), headers=tenant.headers)
    assert streamed.status_code == 413
    assert "limit" in streamed.json()["detail"]

    too_many = [cloud_event(tenant=tenant.id) for _ in range(51)]
    response = await client.post("/v1/events", json=too_many, headers=tenant.headers)
    assert response.status_code == 413


async def test_stored_events_are_only_visible_to_their_tenant(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    db: Database,
    worker: object,
):
    alice = await make_tenant()
    bob = await make_tenant()
    shared_email = f"{uuid.uuid4().hex[:8]}@shared.test"
    events = [
        cloud_event(tenant=alice.id, identifiers=[{"type": "email", "value": shared_email}])
        for _ in range(5)
    ]
    bobs = cloud_event(tenant=bob.id, identifiers=[{"type": "email", "value": shared_email}])
    response = await client.post(
        "/v1/events", content=orjson.dumps(events), headers={**alice.headers, **BATCH}
    )
    assert response.status_code == 202
    assert (await client.post("/v1/events", json=bobs, headers=bob.headers)).status_code == 202

    async def all_stored() -> bool:
        return len(await stored_ids(db, alice.id)) == 5 and len(await stored_ids(db, bob.id)) == 1

    await eventually(all_stored)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"identifier": shared_email.upper(), "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/events", params=params, headers=alice.headers)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(e["id"] for e in events)
    bob_page = await client.get(
        "/v1/events", params={"customer": shared_email}, headers=bob.headers
    )
    assert [e["id"] for e in bob_page.json()["items"]] == [bobs["id"]]
    by_type = await client.get("/v1/events", params={"type": "case.opened"}, headers=alice.headers)
    assert by_type.json()["items"] == []
    since = events[0]["time"]  # naive times are UTC, like the events' own
    recent = await client.get(
        "/v1/events", params={"since": since[:19], "limit": 500}, headers=alice.headers
    )
    assert {e["id"] for e in recent.json()["items"]} == {e["id"] for e in events}
    future = await client.get(
        "/v1/events", params={"since": "2999-01-01T00:00:00Z"}, headers=alice.headers
    )
    assert future.json()["items"] == []
    bad_cursor = await client.get("/v1/events", params={"cursor": "zz"}, headers=alice.headers)
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["detail"][0]["loc"] == "query.cursor"


async def test_dead_letters_are_listed_for_their_tenant(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    producer,
    ingest_settings: IngestSettings,
    worker: object,
):
    tenant = await make_tenant()
    other = await make_tenant()
    bad = cloud_event(tenant=tenant.id, type="survey.responded", survey="nps", score=42)
    await producer.send_and_wait(ingest_settings.topic_raw, orjson.dumps(bad))

    async def listed() -> list:
        page = await client.get("/v1/dead-letters", headers=tenant.headers)
        return page.json()["items"]

    items = await eventually(listed)
    assert items[0]["reason"] == "schema"
    assert "between 0 and 10" in items[0]["message"]
    assert items[0]["event_id"] == bad["id"]
    assert orjson.loads(items[0]["payload"]) == bad
    other_page = await client.get("/v1/dead-letters", headers=other.headers)
    assert other_page.json()["items"] == []


async def test_schema_is_served(client: httpx.AsyncClient):
    response = await client.get("/v1/schema")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    assert response.content == SCHEMA_PATH.read_bytes()
    assert "contact.started" in response.text
    openapi = (await client.get("/openapi.json")).json()
    assert {"/v1/events", "/v1/batch", "/v1/identify", "/v1/dead-letters"} <= set(openapi["paths"])
    assert openapi["paths"]["/v1/events"]["post"]["description"].startswith("Send one CloudEvent")
