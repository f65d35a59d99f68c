import base64
import gzip
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from services.ingest.segment import SegmentError, batch_messages, to_cloud_event
from shared.db import Database
from shared.events import EventType, validate_event
from tests.ingest.conftest import stored_ids
from tests.support import TenantFactory, app_client, eventually

TYPES = {t.value for t in EventType}


def zulu(moment: datetime) -> str:
    """How Segment's libraries write a timestamp."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def mapped(message: dict, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    event = to_cloud_event(message, tenant="acme", now=now)
    validate_event(event, now=now)  # every mapping must satisfy the contract
    return event


def test_identify_becomes_identity_linked_with_traits_and_identifiers(now: datetime):
    two_hours_ago = zulu(now - timedelta(hours=2))
    event = mapped(
        {
            "type": "identify",
            "messageId": "m-1",
            "userId": "u-42",
            "anonymousId": "anon-7",
            "timestamp": two_hours_ago,
            "traits": {
                "email": "Ann@Shop.COM",
                "phone": "not a phone",
                "tier": "gold",
                "address": {"city": "Berlin"},
                "tags": ["a"],
            },
            "context": {"library": {"name": "analytics.js", "version": "2.1"}},
        }
    )
    assert event["id"] == "m-1"
    assert event["type"] == "identity.linked"
    assert event["time"] == two_hours_ago
    assert event["source"] == "segment:analytics.js"
    assert event["data"]["channel"] == "web"
    assert event["data"]["identifiers"] == [
        {"type": "user_id", "value": "u-42", "verified_by": "login"},
        {"type": "anonymous_id", "value": "anon-7", "verified_by": "cookie"},
        {"type": "email", "value": "Ann@Shop.COM", "verified_by": "self_asserted"},
    ]  # the malformed phone stays a trait but identifies nobody
    assert event["data"]["traits"] == {
        "email": "Ann@Shop.COM",
        "phone": "not a phone",
        "tier": "gold",
        "address.city": "Berlin",
    }


def test_track_maps_waypoint_types_orders_and_everything_else():
    native = mapped(
        {
            "type": "track",
            "userId": "u",
            "event": "survey.responded",
            "properties": {"survey": "csat", "score": 4},
        }
    )
    assert native["type"] == "survey.responded"
    assert native["data"]["score"] == 4
    order = mapped(
        {
            "type": "track",
            "userId": "u",
            "event": "Order Completed",
            "properties": {"order_id": "o-1", "total": 99.5, "currency": "eur"},
            "context": {"channel": "mobile"},
        }
    )
    assert order["type"] == "purchase.completed"
    assert (order["data"]["order_id"], order["data"]["amount"]) == ("o-1", 99.5)
    assert order["data"]["currency"] == "EUR"
    assert order["data"]["channel"] == "app"
    other = mapped(
        {"type": "track", "anonymousId": "a", "event": "Report Exported", "properties": {"n": 3}}
    )
    assert other["type"] == "product.used"
    assert other["data"]["feature"] == "Report Exported"
    assert other["data"]["properties"] == {"n": 3}
    assert other["id"].startswith("segment-")  # no messageId: a fresh id


def test_alias_group_page_screen():
    alias = mapped(
        {"type": "alias", "previousId": "anon-1", "userId": "u-1", "anonymousId": "anon-1"}
    )
    assert alias["type"] == "identity.linked"
    assert {(i["type"], i["value"]) for i in alias["data"]["identifiers"]} == {
        ("user_id", "u-1"),
        ("anonymous_id", "anon-1"),
    }
    alias_users = mapped({"type": "alias", "previousId": "old-user", "userId": "u-1"})
    assert ("user_id", "old-user") in {
        (i["type"], i["value"]) for i in alias_users["data"]["identifiers"]
    }
    group = mapped({"type": "group", "userId": "u", "groupId": "acct-9", "traits": {"plan": "pro"}})
    assert {"type": "account_id", "value": "acct-9"} in group["data"]["identifiers"]
    assert group["data"]["traits"] == {"account.plan": "pro"}
    page = mapped(
        {"type": "page", "anonymousId": "a", "name": "Pricing", "properties": {"url": "/p"}}
    )
    assert (page["type"], page["data"]["touchpoint"]) == ("marketing.touched", "Pricing")
    screen = mapped({"type": "screen", "userId": "u", "name": "Home"})
    assert (screen["type"], screen["data"]["feature"]) == ("product.used", "screen:Home")


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "track", "event": "x"}, "userId"),
        ({"type": "track", "userId": "u"}, "event"),
        ({"type": "alias", "userId": "u"}, "previousId"),
        ({"type": "group", "userId": "u"}, "groupId"),
        ({"type": "bogus", "userId": "u"}, "unknown"),
        ("not an object", "object"),
    ],
)
def test_unmappable_messages_say_why(message, error):
    with pytest.raises(SegmentError, match=error):
        to_cloud_event(message, tenant="acme", now=datetime.now(UTC))


def test_batch_context_is_shared_by_its_messages():
    messages = batch_messages(
        {
            "batch": [{"type": "track", "userId": "u", "event": "x", "context": {"ip": "1"}}],
            "context": {"library": {"name": "analytics-python"}},
        }
    )
    assert messages[0]["context"] == {"library": {"name": "analytics-python"}, "ip": "1"}
    with pytest.raises(SegmentError):
        batch_messages({"batch": "nope"})


@pytest.fixture
async def client(ingest_settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(ingest_settings)) as http:
        yield http


def write_key(key: str) -> dict[str, str]:
    """How the Segment SDKs authenticate: the write key as the Basic user name."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def test_segment_calls_are_accepted_mapped_and_stored(
    client: httpx.AsyncClient,
    make_tenant: TenantFactory,
    db: Database,
    worker: object,
):
    tenant = await make_tenant(scopes=["events:write"])
    auth = write_key(tenant.key)
    user = f"u-{uuid.uuid4().hex[:6]}"
    ids = [f"m-{uuid.uuid4().hex}" for _ in range(5)]
    calls = [
        ("/v1/identify", {"messageId": ids[0], "userId": user, "traits": {"tier": "gold"}}),
        ("/v1/track", {"messageId": ids[1], "userId": user, "event": "Order Completed"}),
        ("/v1/alias", {"messageId": ids[2], "userId": user, "previousId": "anon-x"}),
    ]
    for path, message in calls:
        response = await client.post(path, json=message, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["success"] is True
        assert response.json()["accepted"] == 1
    batch = {
        "batch": [
            {"type": "track", "messageId": ids[3], "userId": user, "event": "contact.started"},
            {"type": "page", "messageId": ids[4], "anonymousId": "anon-x", "name": "Help"},
            {"type": "track", "messageId": "m-bad", "event": "no user"},
        ],
        "sentAt": datetime.now(UTC).isoformat(),
    }
    response = await client.post("/v1/batch", json=batch, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["accepted"], body["rejected"]) == (True, 2, 1)
    assert body["results"][2] == {
        "index": 2,
        "id": "m-bad",
        "status": "rejected",
        "reason": "segment",
        "message": "a message needs a 'userId' or an 'anonymousId'",
    }

    async def all_stored() -> bool:
        return sorted(await stored_ids(db, tenant.id)) == sorted(ids)

    await eventually(all_stored)
    page = await client.get(
        "/v1/events", params={"identifier": f"user_id:{user}"}, headers=tenant.headers
    )
    assert page.status_code == 403  # a write key cannot read
    reader = await make_tenant.key(tenant, scopes=["events:read"])
    page = await client.get(
        "/v1/events",
        params={"identifier": f"user_id:{user}"},
        headers={"Authorization": f"Bearer {reader}"},
    )
    types = sorted(e["type"] for e in page.json()["items"])
    assert types == ["contact.started", "identity.linked", "identity.linked", "purchase.completed"]


async def test_segment_refusals(client: httpx.AsyncClient, make_tenant: TenantFactory):
    tenant = await make_tenant(scopes=["events:write"])
    message = {"userId": "u", "event": "x"}
    assert (await client.post("/v1/track", json=message)).status_code == 401
    assert (
        await client.post("/v1/track", json=message, headers=write_key("wp_wrong"))
    ).status_code == 401
    response = await client.post("/v1/track", json={"event": "x"}, headers=write_key(tenant.key))
    assert response.status_code == 422
    assert response.json()["detail"][0]["reason"] == "segment"
    response = await client.post("/v1/batch", json={"nope": 1}, headers=write_key(tenant.key))
    assert response.status_code == 400
    gzipped = await client.post(
        "/v1/batch",
        content=gzip.compress(orjson.dumps({"batch": [{"type": "identify", "userId": "u"}]})),
        headers={**write_key(tenant.key), "content-encoding": "gzip"},
    )
    assert gzipped.status_code == 200, gzipped.text


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
properties = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
    max_size=5,
)


@given(
    user=st.text(min_size=1, max_size=40).filter(lambda s: s.strip()),
    event=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and s.strip() not in TYPES),
    props=properties,
    traits=properties,
)
def test_any_track_or_identify_from_a_known_user_maps_to_a_valid_event(user, event, props, traits):
    track = mapped({"type": "track", "userId": user, "event": event, "properties": props})
    assert track["type"] in {"product.used", "purchase.completed"}
    identify = mapped({"type": "identify", "userId": user, "traits": traits})
    assert identify["data"]["identifiers"][0] == {
        "type": "user_id",
        "value": user.strip(),
        "verified_by": "login",
    }


def test_times_are_corrected_for_the_sender_clock_like_segment_does(now: datetime):
    # a device clock 2 hours fast: the event happened 30 s before the batch was sent
    device = now + timedelta(hours=2)
    ahead = {
        "type": "track",
        "userId": "u",
        "event": "x",
        "timestamp": zulu(device - timedelta(seconds=30)),
        "sentAt": zulu(device),
    }
    happened = (now - timedelta(seconds=30)).isoformat()
    assert mapped(ahead, now)["time"] == happened
    without_sent_at = {k: v for k, v in ahead.items() if k != "sentAt"}
    earlier = zulu(now - timedelta(hours=2))
    assert mapped({**without_sent_at, "timestamp": earlier}, now)["time"] == earlier
    [from_batch] = batch_messages({"batch": [without_sent_at], "sentAt": ahead["sentAt"]})
    assert to_cloud_event(from_batch, tenant="acme", now=now)["time"] == happened
    assert mapped({"type": "track", "userId": "u", "event": "x"}, now)["time"] == now.isoformat()
