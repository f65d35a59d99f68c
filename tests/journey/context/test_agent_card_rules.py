"""What the agent's card carries, as pure rules: purchases, the customer's name, timeline
excerpts and fact values (masked by the facts ledger's rule), engagement and churn risk."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from services.journey.context import rules as ctx
from services.journey.context import views
from shared.events import Envelope, validate_event
from tests.support import cloud_event


def make(now: datetime, type_: str, minutes_ago: float, **data: Any) -> Envelope:
    raw = cloud_event(
        tenant="t",
        type=type_,
        identifiers=[{"type": "email", "value": "ada@x.io", "verified_by": "login"}],
        time=now - timedelta(minutes=minutes_ago),
        **data,
    )
    return validate_event(raw, now=now)


def engagement(version: int, score: float, *, alert: bool, now: datetime) -> dict[str, Any]:
    return {
        "version": version,
        "changed_at": now.isoformat(),
        "score": score,
        "scored_at": now.isoformat(),
        "segment": "default",
        "threshold": 40.0,
        "contributions": {"activity": score / 2, "utilisation": score / 2},
        "alert": {
            "alert_id": "a-1",
            "status": "open",
            "rules": ["below_threshold"],
            "score": score,
            "threshold": 40.0,
            "opened_at": (now - timedelta(hours=3)).isoformat(),
            "owner": "olga",
            "summary": "Engagement 34.5 vs threshold 40",
        }
        if alert
        else None,
        "merged_into": None,
    }


def test_purchases_keep_the_latest_five_newest_first_whatever_the_arrival_order(now: datetime):
    events = [
        make(now, "purchase.completed", 60 * i, order_id=f"O-{i}", amount=10.0 * i, currency="EUR")
        for i in range(1, 8)
    ]
    random.Random(7).shuffle(events)
    doc = ctx.rebuild(events)
    shown = views.purchases(doc)
    assert [p["order_id"] for p in shown] == ["O-1", "O-2", "O-3", "O-4", "O-5"]
    assert shown[0]["amount"] == 10.0
    assert shown[0]["currency"] == "EUR"
    assert shown[0]["event_id"] == next(e.id for e in events if e.data.order_id == "O-1")


def test_who_is_the_name_fact_else_the_name_traits_else_an_identifier(now: datetime):
    ids = [{"type": "email", "value": "ada@x.io", "strength": 100}]
    doc = ctx.rebuild([make(now, "contact.started", 10)])
    assert views.handoff_summary(doc, identities=ids, now=now)["who"] == "email ada@x.io"

    ctx.apply_event(doc, make(now, "identity.linked", 9, traits={"firstName": "Ada"}))
    assert views.handoff_summary(doc, identities=ids, now=now)["who"] == "Ada"
    ctx.apply_event(doc, make(now, "identity.linked", 8, traits={"last_name": "Lovelace"}))
    assert views.handoff_summary(doc, identities=ids, now=now)["who"] == "Ada Lovelace"
    ctx.apply_event(doc, make(now, "identity.linked", 7, traits={"name": "Ada King"}))
    assert views.handoff_summary(doc, identities=ids, now=now)["who"] == "Ada King"

    ctx.apply_event(
        doc, make(now, "fact.collected", 6, name="name", value="Secret", sensitive=True)
    )
    assert views.handoff_summary(doc, identities=ids, now=now)["who"] == "Ada King"
    ctx.apply_event(doc, make(now, "fact.collected", 5, name="name", value="Countess Ada"))
    summary = views.handoff_summary(doc, identities=ids, now=now)
    assert summary["who"] == "Countess Ada"
    assert summary["text"].startswith("Countess Ada.")


def test_timeline_items_carry_bounded_excerpts_fact_values_and_orders_masked_when_sensitive(
    now: datetime,
):
    long_text = "My order never arrived and " + "I am really upset about it " * 40
    doc = ctx.rebuild(
        [
            make(now, "message.received", 50, channel="web_chat", text=long_text),
            make(now, "message.received", 40, channel="sms", text="card 4111 1111", sensitive=True),
            make(now, "fact.collected", 30, name="delivery_address", value="221B Baker Street"),
            make(now, "fact.collected", 20, name="pin", value="1234", sensitive=True),
            make(now, "purchase.completed", 10, order_id="O-9", amount=99.5, currency="GBP"),
        ]
    )
    items = {i["type"] + str(i.get("fact", "")) + str(i.get("sensitive", "")): i for i in
             views.timeline_items(doc["recent"], reveal=False)}  # fmt: skip
    chat = items["message.received"]
    assert chat["excerpt"].startswith("My order never arrived")
    assert len(chat["excerpt"]) <= ctx.EXCERPT_CHARS
    assert chat["excerpt"].endswith("…")
    assert "masked" not in chat
    secret_message = items["message.receivedTrue"]
    assert secret_message["excerpt"] == views.MASK
    assert secret_message["masked"] is True
    assert items["fact.collecteddelivery_address"]["value"] == "221B Baker Street"
    pin = items["fact.collectedpinTrue"]
    assert pin["value"] == views.MASK
    assert pin["masked"] is True
    order = items["purchase.completed"]
    assert (order["order_id"], order["amount"], order["currency"]) == ("O-9", 99.5, "GBP")

    revealed = views.timeline_items(doc["recent"], reveal=True)
    assert {i.get("value") for i in revealed} >= {"1234", "221B Baker Street"}
    assert "card 4111 1111" in {i.get("excerpt") for i in revealed}
    # the stored document is not touched by masking, and the ledger masks the same way
    assert any(i.get("value") == "1234" for i in doc["recent"])
    ledger = views.facts_ledger(doc, now=now, reveal=False)
    assert next(f for f in ledger if f["name"] == "pin")["value"] == views.MASK


def test_excerpt_is_one_line_cut_at_a_word_boundary():
    assert ctx.excerpt("  short\n text ") == "short text"
    cut = ctx.excerpt("word " * 100, limit=30)
    assert cut == "word word word word word word…"
    assert len(ctx.excerpt("x" * 500)) == ctx.EXCERPT_CHARS


def test_a_stale_or_replayed_engagement_never_overwrites_a_newer_one(now: datetime):
    doc = ctx.empty()
    assert ctx.fold_engagement(doc, engagement(200, 34.5, alert=True, now=now))
    assert not ctx.fold_engagement(doc, engagement(100, 90.0, alert=False, now=now))  # late
    assert not ctx.fold_engagement(doc, engagement(200, 90.0, alert=False, now=now))  # replay
    assert doc["engagement"]["score"] == 34.5
    assert ctx.fold_engagement(doc, engagement(201, 80.0, alert=False, now=now))
    assert doc["engagement"]["score"] == 80.0
    assert doc["engagement"]["alert"] is None


def test_a_rebuilt_document_keeps_its_engagement(now: datetime):
    kept = engagement(7, 34.5, alert=True, now=now)
    doc = ctx.rebuild([make(now, "contact.started", 5)], engagement=kept)
    assert doc["engagement"] == kept


def test_an_open_churn_alert_shows_as_risk_in_the_summary_and_next_steps(now: datetime):
    ids = [{"type": "email", "value": "ada@x.io", "strength": 100}]
    doc = ctx.rebuild([make(now, "contact.started", 5)])
    assert views.engagement(doc) is None
    assert views.handoff_summary(doc, identities=ids, now=now)["churn_risk"] is None

    ctx.fold_engagement(doc, engagement(1, 34.5, alert=True, now=now))
    shown = views.engagement(doc)
    assert shown is not None
    assert shown["score"] == 34.5
    assert shown["at_risk"] is True
    assert shown["alert"]["rules"] == ["below_threshold"]
    summary = views.handoff_summary(doc, identities=ids, now=now)
    assert summary["churn_risk"] == (
        "At risk of churning: engagement 34.5 vs threshold 40.0, churn alert open since 3 h ago"
    )
    assert summary["churn_risk"] in summary["text"]
    step = summary["next_steps"][0]
    assert step["action"].startswith("treat as a retention risk")
    assert "olga" in step["action"]
    assert "34.5 vs threshold 40.0" in step["why"]

    ctx.fold_engagement(doc, engagement(2, 72.0, alert=False, now=now))
    summary = views.handoff_summary(doc, identities=ids, now=now)
    assert summary["churn_risk"] is None
    assert not any("retention" in s["action"] for s in summary["next_steps"])
