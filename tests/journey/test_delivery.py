"""Exactly-once effects: replaying the topic changes nothing; two workers equal one."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text

from shared.db import Database
from shared.kafka import ensure_topics
from tests.journey.conftest import Worker, cloud_event, journey_settings_for, send
from tests.support import eventually


def person_events(tenant: str, i: int, tag: str) -> list[dict[str, Any]]:
    """One person through different identifiers (their Kafka keys differ, so do partitions)."""
    email, phone, chat = f"p{i}-{tag}@x.test", f"+1 415 555 {1000 + i:04d}", f"chat-{tag}-{i}"
    return [
        cloud_event(
            tenant=tenant,
            id=f"{tag}-{i}-a",
            type="contact.started",
            identifiers=[
                {"type": "email", "value": email, "verified_by": "login"},
                {"type": "phone", "value": phone, "verified_by": "caller_id"},
            ],
            channel="phone",
            agent_id=f"agent-{i % 3}",
            time=f"2026-11-20T10:{i % 60:02d}:00Z",
        ),
        cloud_event(
            tenant=tenant,
            id=f"{tag}-{i}-b",
            type="fact.collected",
            identifiers=[
                {"type": "phone", "value": phone, "verified_by": "caller_id"},
                {"type": "chat_session", "value": chat},
            ],
            channel="web_chat",
            name="order_number",
            value=f"ORD-{i}",
            time=f"2026-11-20T11:{i % 60:02d}:00Z",
        ),
        cloud_event(
            tenant=tenant,
            id=f"{tag}-{i}-c",
            type="case.opened",
            identifiers=[{"type": "chat_session", "value": chat}],
            channel="web_chat",
            case_id=f"C-{i}",
            reason="billing",
            time=f"2026-11-20T12:{i % 60:02d}:00Z",
        ),
        cloud_event(
            tenant=tenant,
            id=f"{tag}-{i}-d",
            type="agent.joined",
            identifiers=[{"type": "email", "value": email, "verified_by": "login"}],
            channel="web_chat",
            agent_id="late-agent",
            time=f"2026-11-20T09:{i % 60:02d}:00Z",  # arrives last, happened first
        ),
    ]


async def snapshot(db: Database, tenant: str) -> dict[str, Any]:
    """Everything the worker derives for a tenant, with ids replaced by stable labels."""
    async with db.session() as s:
        customers = (
            await s.execute(
                text("SELECT id, status FROM journey.customer WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant},
            )
        ).all()
        links = (
            await s.execute(
                text(
                    """SELECT i.id_type, i.value, coalesce(c.merged_into, c.id) AS cid, i.strength
                       FROM journey.identifier i JOIN journey.customer c
                         ON c.tenant_id = i.tenant_id AND c.id = i.customer_id
                       WHERE i.tenant_id = :t ORDER BY 1, 2, 3"""
                ),
                {"t": tenant},
            )
        ).all()
        contexts = (
            await s.execute(
                text("SELECT customer_id, doc, version FROM journey.context WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).all()
        events = await s.scalar(
            text("SELECT count(*) FROM journey.event WHERE tenant_id = :t"), {"t": tenant}
        )
    by_email = {r.cid: r.value for r in links if r.id_type == "email"}
    docs = {}
    for c in contexts:
        doc = c.doc
        docs[by_email.get(c.customer_id, str(c.customer_id))] = {
            "facts": sorted((f["name"], f["value"]) for f in doc["facts"]),
            "cases": sorted(doc["cases"]),
            "last_agent": (doc["last_agent"] or {}).get("agent_id"),
            "events": doc["event_count"],
        }
    return {
        "active": sum(1 for c in customers if c.status == "active"),
        "links": sorted((r.id_type, r.value, by_email.get(r.cid), r.strength) for r in links),
        "contexts": docs,
        "events": events,
        "versions": sorted(c.version for c in contexts),
    }


def applied() -> float:
    return REGISTRY.get_sample_value("waypoint_journey_events_total", {"result": "duplicate"}) or 0


async def test_two_workers_equal_one_and_replay_changes_nothing(
    db, producer, settings_overrides, make_tenant
):
    run = uuid.uuid4().hex[:6]
    one = journey_settings_for(settings_overrides, topic_normalized=f"journey-one-{run}")
    two = journey_settings_for(settings_overrides, topic_normalized=f"journey-two-{run}")
    await ensure_topics(one, [one.topic_normalized, two.topic_normalized], partitions=4)
    t1, t2 = await make_tenant(), await make_tenant()
    people = 40
    for tenant, cfg in ((t1, one), (t2, two)):
        events = [e for i in range(people) for e in person_events(tenant.id, i, run)]
        # Send the late agent.joined events last: per-customer order must come from event time.
        events.sort(key=lambda e: e["id"].endswith("-d"))
        await send(producer, cfg, *events)

    single = Worker(one)
    pair = [
        Worker(two),
        Worker(
            journey_settings_for(
                settings_overrides,
                topic_normalized=two.topic_normalized,
                consumer_group=two.consumer_group,
            )
        ),
    ]

    async def done(tenant) -> bool:
        snap = await snapshot(db, tenant.id)
        return snap["events"] == people * 4

    try:
        await eventually(lambda: done(t1), timeout=60)
        await eventually(lambda: done(t2), timeout=60)
    finally:
        for w in (single, *pair):
            await w.stop()
    s1, s2 = await snapshot(db, t1.id), await snapshot(db, t2.id)
    assert s1["active"] == people  # one customer per person, whatever the arrival order
    assert {k: v for k, v in s2.items() if k != "versions"} == {
        k: v for k, v in s1.items() if k != "versions"
    }
    alice = s1["contexts"][f"p0-{run}@x.test"]
    assert alice["facts"] == [("order_number", "ORD-0")]
    assert alice["cases"] == ["C-0"]
    assert alice["last_agent"] == "agent-0"  # not the late-arriving, earlier agent
    assert alice["events"] == 4

    # Replay the whole topic from offset 0 with a new consumer group: nothing changes.
    before_dupes = applied()
    replay = Worker(journey_settings_for(settings_overrides, topic_normalized=one.topic_normalized))
    try:
        await eventually(lambda: _true(applied() - before_dupes >= people * 4), timeout=60)
    finally:
        await replay.stop()
    assert await snapshot(db, t1.id) == s1


async def _true(value: bool) -> bool:
    return value
