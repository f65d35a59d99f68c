"""The context reducer, read-side views and the context cache: pure, no database."""

import uuid
from datetime import datetime, timedelta

import orjson

from services.journey.context import rules as ctx
from services.journey.context import views
from services.journey.context.cache import ContextCache
from shared.events import validate_event
from tests.support import cloud_event


def story(now: datetime):
    def env(type_: str, minutes_ago: float, **data):
        raw = cloud_event(
            tenant="t",
            type=type_,
            identifiers=[{"type": "email", "value": "a@x.io", "verified_by": "login"}],
            time=now - timedelta(minutes=minutes_ago),
            **data,
        )
        return validate_event(raw, now=now)

    return [
        env(
            "agent.joined", 300, channel="web_chat", interaction_id="c1", agent_id="amy", team="t1"
        ),
        env(
            "case.opened",
            290,
            channel="web_chat",
            interaction_id="c1",
            case_id="K1",
            reason="refund",
        ),
        env("fact.collected", 280, channel="web_chat", name="order_number", value="O-1"),
        env("fact.collected", 270, name="pin", value="1234", sensitive=True),
        env(
            "fact.collected",
            260,
            name="otp",
            value="9",
            expires_at=(now - timedelta(minutes=1)).isoformat(),
        ),
        env("message.received", 250, channel="web_chat", sentiment=0.2),
        env("message.received", 240, channel="web_chat", sentiment=-0.7),
        env("callback.requested", 230, channel="phone", interaction_id="cb1"),
        env("agent.joined", 500, channel="phone", agent_id="old-bob"),  # late, but older
    ]


def test_folding_in_any_order_gives_the_same_document(now: datetime):
    events = story(now)
    forward = ctx.rebuild(events)
    backward = ctx.empty()
    for e in reversed(events):
        ctx.apply_event(backward, e)
    assert backward["last_agent"] == forward["last_agent"]
    assert backward["cases"] == forward["cases"]
    assert backward["last_agent"]["agent_id"] == "amy"  # latest by event time, not arrival


def test_folding_a_chunk_at_once_is_folding_its_events_one_by_one(now: datetime):
    """The worker folds a customer's events of a chunk in one call (the recent list merged
    once): the same document as one event at a time, past the recent list's length, over a
    document that already holds some of them (a replay) and with an id given twice."""
    events = story(now) + [
        validate_event(
            cloud_event(
                tenant="t",
                type="message.received",
                identifiers=[{"type": "email", "value": "a@x.io"}],
                time=now - timedelta(minutes=m),
                channel="sms",
            ),
            now=now,
        )
        for m in (5, 400, 1, 600, 3)
    ]
    assert len(events) > ctx.RECENT_ITEMS
    start = ctx.rebuild(events[:4])
    chunk = [*events[2:], events[-1]]
    one_by_one = orjson.loads(orjson.dumps(start))
    for e in chunk:
        ctx.apply_event(one_by_one, e)
    at_once = ctx.apply_events(orjson.loads(orjson.dumps(start)), chunk)
    assert at_once == one_by_one
    assert len(at_once["recent"]) == ctx.RECENT_ITEMS


def test_views_mask_expire_and_explain(now: datetime):
    doc = ctx.rebuild(story(now))
    ledger = {f["name"]: f for f in views.facts_ledger(doc, now=now, reveal=False)}
    assert ledger["pin"]["value"] == views.MASK
    assert ledger["order_number"]["value"] == "O-1"
    assert ledger["otp"]["expired"] is True
    assert views.facts_ledger(doc, now=now, reveal=True)[-1]["value"] != views.MASK
    summary = views.handoff_summary(doc, identities=[], now=now)
    assert "otp" not in summary["do_not_ask"]
    assert summary["likely_reason"] == "refund"
    actions = [s["action"] for s in summary["next_steps"]]
    assert actions[0] == "complete the pending callback"
    assert any(a.startswith("continue case K1") for a in actions)
    assert any("escalation" in a for a in actions)  # sentiment dropped to -0.7
    assert all(s["why"] for s in summary["next_steps"])


def test_route_hint_prefers_the_case_agent_and_skips_the_ivr_only_when_recent(now: datetime):
    doc = ctx.rebuild(story(now))
    hint = views.route_hint(doc, now=now, skip_ivr_hours=24, preferred_agent_hours=72)
    assert (hint["preferred_agent"], hint["preferred_team"], hint["skip_ivr"]) == (
        "amy",
        "t1",
        True,
    )
    later = views.route_hint(
        doc, now=now + timedelta(days=3), skip_ivr_hours=24, preferred_agent_hours=72
    )
    assert later["skip_ivr"] is False
    assert later["preferred_agent"] == "amy"  # still the open case's agent
    assert any("keep the IVR menu" in r for r in later["reasons"])


def test_cache_refuses_a_read_that_raced_with_a_notice():
    cache = ContextCache(max_bytes=1000)
    cache.enabled = True
    key = ("t", uuid.uuid4())
    token = cache.token()
    cache.invalidate(key)  # the worker committed while we were reading
    cache.put(key, 1, "{}", token, ("t", "email", "a@x.io"))
    assert cache.document(key) is None
    assert cache.customer("t", "email", "a@x.io") is None
    cache.put(key, 2, "{}", cache.token(), ("t", "email", "a@x.io"))
    assert cache.document(key) == (2, "{}")
    assert cache.customer("t", "email", "a@x.io") == key[1]
    cache.invalidate(key)
    assert cache.document(key) is None
    assert cache.customer("t", "email", "a@x.io") is None


def test_cache_is_bounded_and_off_without_a_listener():
    cache = ContextCache(max_bytes=10)
    keys = [("t", uuid.uuid4()) for _ in range(3)]
    cache.put(keys[0], 1, "12345", cache.token())
    assert cache.document(keys[0]) is None  # disabled until LISTEN is up
    cache.enabled = True
    for k in keys:
        cache.put(k, 1, "12345", cache.token())
    assert cache.document(keys[0]) is None  # evicted (10 bytes hold two)
    assert cache.document(keys[2]) == (1, "12345")
    token = cache.token()
    cache.clear()  # the listener reconnected: notices may have been missed
    cache.put(keys[1], 1, "x", token)
    assert cache.document(keys[1]) is None


def test_the_fast_activity_renders_exactly_as_the_contract_model(now: datetime):
    import orjson

    from services.journey.applier import Incoming, _activity
    from shared.events.activity import CustomerActivity

    e = validate_event(
        cloud_event(
            tenant="t",
            identifiers=[
                {"type": "account_id", "value": "acc-1"},
                {"type": "email", "value": "A@x.io"},
            ],
            channel="phone",
            time=now,
        ),
        now=now,
    )
    cid = uuid.uuid4()
    key, value = _activity(Incoming(e, e.to_json()), cid, {"tier": "gold"})
    model = CustomerActivity(
        tenant="t",
        customer_id=str(cid),
        account_id="acc-1",
        occurred_at=e.time,
        event=orjson.loads(e.to_json()),
        traits={"tier": "gold"},
    )
    assert (key, value) == (model.kafka_key(), model.to_json())
    # as the worker calls it: the traits' JSON and the key rendered once per customer
    traits = orjson.Fragment(orjson.dumps({"tier": "gold"}, option=orjson.OPT_UTC_Z))
    assert _activity(Incoming(e, e.to_json()), cid, traits, f"t|{cid}".encode()) == (
        model.kafka_key(),
        model.to_json(),
    )
