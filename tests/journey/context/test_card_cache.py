"""The screen pop's rendered cards (``ContextCache.put_card``): kept beside their document, gone
with it, never served past the instant the clock alone would change them, and the card served
is the card rendered now."""

from __future__ import annotations

import math
import time
import uuid
from datetime import datetime, timedelta

import orjson

from services.journey.app import create_app
from services.journey.context import rules as ctx
from services.journey.context import service
from services.journey.context.cache import ContextCache
from services.journey.context.rules import identity_list
from tests.journey.conftest import cloud_event, context_when, send
from tests.journey.context.test_agent_card_rules import engagement, make
from tests.support import app_client, eventually

EMAIL = ("t", "email", "ada@x.io")
CUSTOMER = uuid.UUID(int=7)


def _cache_with(key: tuple[str, uuid.UUID], doc: str = "{}") -> ContextCache:
    cache = ContextCache(max_bytes=1000)
    cache.enabled = True
    cache.put(key, 1, doc, cache.token(), EMAIL)
    return cache


def test_a_card_lives_and_dies_with_its_document():
    key = ("t", uuid.uuid4())
    cache = _cache_with(key)
    entry = cache.entry(key)
    assert entry is not None
    cache.put_card(key, entry, math.inf, b"card-1")
    assert cache.card(*EMAIL, time.time()) == b"card-1"

    cache.invalidate(key)  # a change was announced
    assert cache.card(*EMAIL, time.time()) is None
    cache.put_card(key, entry, math.inf, b"stale")  # rendered from the dropped entry
    assert cache.card(*EMAIL, time.time()) is None
    assert cache.entry(key) is None

    cache.put(key, 2, "{}", cache.token(), EMAIL)
    fresh = cache.entry(key)
    assert fresh is not None
    cache.put_card(key, fresh, math.inf, b"card-2")
    cache.put(key, 3, "{}", cache.token(), EMAIL)  # replaced by a newer read: card dropped
    assert cache.card(*EMAIL, time.time()) is None
    cache.put_card(key, fresh, math.inf, b"card-2")  # not the current entry any more
    assert cache.card(*EMAIL, time.time()) is None

    current = cache.entry(key)
    assert current is not None
    cache.put_card(key, current, math.inf, b"card-3")
    cache.clear()  # the listener reconnected
    assert cache.card(*EMAIL, time.time()) is None
    assert cache._bytes == 0


def test_a_read_that_raced_a_notice_gets_no_entry_to_keep_its_card_with():
    key = ("t", uuid.uuid4())
    cache = ContextCache(max_bytes=1000)
    cache.enabled = True
    token = cache.token()  # our read starts
    cache.invalidate(key)  # a change commits meanwhile
    newer = cache.put(key, 2, "new", cache.token(), EMAIL)  # another request reads it
    assert newer is not None
    assert cache.put(key, 1, "old", token, EMAIL) is None  # ours: not kept, so no card
    assert cache.entry(key) is newer


def test_a_card_is_not_served_from_its_horizon_on_and_counts_against_the_bound():
    key = ("t", uuid.uuid4())
    cache = _cache_with(key, "12345")
    entry = cache.entry(key)
    assert entry is not None
    cache.put_card(key, entry, 1000.0, b"abc")
    assert cache.card(*EMAIL, 999.9) == b"abc"
    assert cache.card(*EMAIL, 1000.0) is None
    assert cache._bytes == 8
    cache.enabled = False  # the listener is down: nothing is served
    assert cache.card(*EMAIL, 0.0) is None
    cache.enabled = True
    other = ("t", uuid.uuid4())
    cache.put(other, 1, "x" * 995, cache.token())  # over the bound: the oldest goes, card too
    assert cache.entry(key) is None
    assert cache.card(*EMAIL, 0.0) is None
    assert cache._bytes == 995


def _card(doc: dict, now: datetime) -> tuple[bytes, float]:
    found = service.Found(CUSTOMER, doc, 3, 1, identity_list(doc))
    return service.masked_card(found, now=now)


def test_the_horizon_is_the_first_instant_the_clock_changes_the_card(now: datetime):
    events = [
        make(now, "callback.requested", 7.5, channel="phone", interaction_id="cb-1"),
        make(now, "case.opened", 190, channel="phone", case_id="C-1", reason="billing"),
        make(
            now,
            "fact.collected",
            2,
            name="plan",
            value="gold",
            expires_at=(now + timedelta(minutes=30)).isoformat(),
        ),
    ]
    doc = ctx.rebuild(events)
    doc["engagement"] = engagement(1, 30.0, alert=True, now=now - timedelta(days=3))
    body, until = _card(doc, now)
    # the callback was requested 7.5 min ago: "7 min ago" until 8 min have passed
    assert until == (now + timedelta(seconds=30)).timestamp()
    at = datetime.fromtimestamp(until, now.tzinfo)
    just_before = at - timedelta(microseconds=1)
    assert _card(doc, just_before)[0] == body
    assert _card(doc, at)[0] != body
    # and so on, each horizon further: every card rendered inside one is the same
    for _ in range(6):
        body, until = _card(doc, at)
        later = datetime.fromtimestamp(until, now.tzinfo)
        assert later > at
        for step in (0.25, 0.5, 0.999):
            inside = at + (later - at) * step
            assert _card(doc, inside)[0] == body
        at = later


def test_an_expiring_fact_bounds_the_card_and_a_card_without_a_clock_is_kept_for_ever(
    now: datetime,
):
    expiry = now + timedelta(seconds=20)
    fact = make(now, "fact.collected", 0, name="plan", value="gold", expires_at=expiry.isoformat())
    doc = ctx.rebuild([fact])
    body, until = _card(doc, now)
    assert until == expiry.timestamp()
    shown = orjson.loads(_card(doc, expiry)[0])
    assert shown["facts"][0]["expired"] is True
    assert orjson.loads(body)["facts"][0]["expired"] is False
    assert _card(ctx.empty(), now)[1] == math.inf


async def test_after_a_change_notice_the_next_screen_pop_shows_the_change(
    journey_settings, journey_worker, producer, make_tenant
):
    """A pop answered from a kept card, then an agent records a fact: once this process has the
    notice, the card is gone and the very next pop is the new version (no stale card)."""
    app = create_app(journey_settings)
    tenant = await make_tenant(scopes=["context:read", "context:write"])
    email = f"card-{uuid.uuid4().hex[:6]}@shop.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    params = {"identifier_type": "email", "value": email}
    async with app_client(app) as client:
        await send(producer, journey_settings, cloud_event(tenant=tenant.id, identifiers=ident))
        first = await context_when(client, tenant.headers, lambda c: True, **params)
        cache: ContextCache = app.state.cache
        key = (tenant.id, uuid.UUID(first["customer_id"]))

        async def from_a_kept_card() -> bytes | None:
            # The first event's own notice may still empty the cache once.
            r = await client.get("/v1/context", params=params, headers=tenant.headers)
            kept = cache.card(tenant.id, "email", email, time.time())
            return r.content if kept is not None and kept == r.content else None

        body = await eventually(from_a_kept_card, timeout=10)
        shown = orjson.loads(body)
        assert shown["facts"] == []
        recorded = await client.post(
            f"/v1/customers/{key[1]}/facts",
            json={"name": "plan", "value": "gold"},
            headers=tenant.headers,
        )
        assert recorded.status_code == 201, recorded.text

        async def noticed() -> bool:
            return cache.entry(key) is None

        await eventually(noticed, timeout=10)
        assert cache.card(tenant.id, "email", email, time.time()) is None
        after = (await client.get("/v1/context", params=params, headers=tenant.headers)).json()
        assert after["version"] == shown["version"] + 1
        assert [(f["name"], f["value"]) for f in after["facts"]] == [("plan", "gold")]
        # read from the database: the document is kept, its card only from the next pop on
        assert cache.entry(key) is not None
        assert cache.card(tenant.id, "email", email, time.time()) is None
        again = await client.get(  # through FastAPI's handler: the same card, now kept
            "/v1/context", params={**params, "reveal_sensitive": "false"}, headers=tenant.headers
        )
        assert again.json() == after
        assert cache.card(tenant.id, "email", email, time.time()) == again.content
