"""The simulator's generator: deterministic, valid, realistic (pure: no database, no broker)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from services.simulator import generate, generate_keyed
from shared.events import EventType, validate_event

# A 30-day window that ended a month ago (midnight UTC), relative to the real clock.
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=60)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(generate(customers=300, seed=11, tenant="acme", start=START, days=30))


def test_same_seed_same_events_and_ids() -> None:
    first = list(generate(customers=40, seed=5, tenant="acme", start=START))
    again = list(generate(customers=40, seed=5, tenant="acme", start=START))
    other = list(generate(customers=40, seed=6, tenant="acme", start=START))
    assert first == again
    assert [e["id"] for e in first] != [e["id"] for e in other]


def test_ids_are_stable_when_only_the_window_moves() -> None:
    """Re-seeding the demo on a later day sends the same ids, so ingest dedupes them."""
    today = [e["id"] for e in generate(customers=30, seed=5, tenant="acme", start=START)]
    later = START + timedelta(days=1)
    tomorrow = [e["id"] for e in generate(customers=30, seed=5, tenant="acme", start=later)]
    assert set(today) == set(tomorrow)


def test_ids_are_unique(events: list[dict]) -> None:
    assert len({e["id"] for e in events}) == len(events)


def test_every_event_is_valid_and_inside_the_window(events: list[dict]) -> None:
    end = START + timedelta(days=30)
    for event in events:
        envelope = validate_event(event, now=end)
        assert START <= envelope.time <= end
        assert envelope.tenant == "acme"


def test_default_window_ends_now_so_nothing_is_in_the_future() -> None:
    now = datetime.now(UTC)
    for event in generate(customers=50, seed=1, tenant="acme"):
        validate_event(event, now=now, max_future=timedelta(seconds=1))


def test_every_event_type_is_used(events: list[dict]) -> None:
    assert {e["type"] for e in events} == {t.value for t in EventType}


def test_channels_and_journeys_are_multi_channel(events: list[dict]) -> None:
    channels = {e["data"].get("channel") for e in events}
    assert {"phone", "ivr", "web_chat", "bot", "social", "email", "messenger", "app"} <= channels
    per_person = defaultdict(set)
    for key, event in generate_keyed(customers=300, seed=11, tenant="acme", start=START):
        per_person[key].add(event["data"].get("channel"))
    assert sum(len(c) >= 3 for c in per_person.values()) > 100


def test_chat_email_is_linked_to_the_phone_by_the_ivr(events: list[dict]) -> None:
    """Social → chat (e-mail given) → phone call whose IVR PIN links the phone to that e-mail."""
    chat_links: dict[str, str] = {}
    ivr_links: list[set[str]] = []
    for event in events:
        if event["type"] != "identity.linked":
            continue
        ids = {i["type"]: i for i in event["data"]["identifiers"]}
        if "chat_session" in ids and ids.get("email", {}).get("verified_by") == "self_asserted":
            chat_links[ids["email"]["value"].lower()] = event["time"]
        if ids.get("phone", {}).get("verified_by") == "ivr_pin" and "email" in ids:
            assert ids["email"]["verified_by"] == "ivr_pin"
            ivr_links.append({ids["email"]["value"].lower(), event["time"]})
    assert len(chat_links) > 20
    social_chats = [
        e for e in events
        if e["type"] == "identity.linked"
        and {i["type"] for i in e["data"]["identifiers"]} == {"social", "chat_session"}
    ]  # fmt: skip
    assert len(social_chats) > 20
    handed_off = [link for link in ivr_links if link & set(chat_links)]
    assert len(handed_off) > 20


def test_pain_points_are_present(events: list[dict]) -> None:
    abandons = {e["data"]["where"] for e in events if e["type"] == "contact.abandoned"}
    assert {"ivr", "queue"} <= abandons
    assert any(e["type"] == "contact.transferred" for e in events)
    sentiments = [e["data"]["sentiment"] for e in events if "sentiment" in e["data"]]
    assert min(sentiments) < -0.3 < 0.2 < max(sentiments)
    surveys = {e["data"]["survey"] for e in events if e["type"] == "survey.responded"}
    assert {"csat", "nps"} <= surveys
    facts = {e["data"]["name"] for e in events if e["type"] == "fact.collected"}
    assert {"order_number", "problem_description", "address", "email"} <= facts


def test_some_accounts_decline_and_churn(events: list[dict]) -> None:
    seats: dict[str, list[float]] = defaultdict(list)
    outcomes: dict[str, str] = {}
    for event in events:
        data = event["data"]
        account = (
            next(i["value"] for i in data["identifiers"] if i["type"] == "account_id")
            if any(i["type"] == "account_id" for i in data["identifiers"])
            else None
        )
        if event["type"] == "product.used" and data.get("purchased_seats"):
            seats[account].append(data["active_seats"] / data["purchased_seats"])
        if event["type"] in {"customer.churned", "customer.renewed"}:
            outcomes[account] = event["type"]
    declined = {a for a, s in seats.items() if s[-1] < s[0] - 0.4}
    assert declined, "some accounts' seat usage must fall"
    assert any(outcomes.get(a) == "customer.churned" for a in declined)
    assert "customer.renewed" in outcomes.values()


def test_b2b_traits(events: list[dict]) -> None:
    traits = [
        e["data"]["traits"]
        for e in events
        if e["type"] == "identity.linked" and e["data"].get("traits")
    ]
    assert all({"tier", "lifecycle_stage", "region", "age_group"} <= t.keys() for t in traits)
    assert any("csm_owner" in t for t in traits)
