"""Exactly-once effects: replaying the topic changes nothing; two workers equal one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.journey.config import JourneySettings
from shared.db import Database
from shared.kafka import ensure_topics, make_consumer
from tests.journey.conftest import Worker, cloud_event, journey_settings_for, send
from tests.support import eventually


def person_events(tenant: str, i: int, tag: str) -> list[dict[str, Any]]:
    """One person through different identifiers (their Kafka keys differ, so do partitions)."""
    email, phone, chat = f"p{i}-{tag}@x.test", f"+1 415 555 {1000 + i:04d}", f"chat-{tag}-{i}"
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=1
    )

    def at(hour: int) -> datetime:
        return yesterday + timedelta(hours=hour, minutes=i % 60)

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
            time=at(10),
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
            time=at(11),
        ),
        cloud_event(
            tenant=tenant,
            id=f"{tag}-{i}-c",
            type="case.opened",
            identifiers=[{"type": "chat_session", "value": chat}],
            channel="web_chat",
            case_id=f"C-{i}",
            reason="billing",
            time=at(12),
        ),
        cloud_event(
            tenant=tenant,
            id=f"{tag}-{i}-d",
            type="agent.joined",
            identifiers=[{"type": "email", "value": email, "verified_by": "login"}],
            channel="web_chat",
            agent_id="late-agent",
            time=at(9),  # arrives last, happened first
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


class Assignments:
    """The partitions each labelled worker's consumer was assigned, in order, as its group
    coordinator handed them over (a consumer-side assignor hook; the workers run here)."""

    def __init__(self) -> None:
        self.history: dict[str, list[set[str]]] = {}

    def assignor(self, label: str) -> type[RoundRobinPartitionAssignor]:
        """The default assignor, also noting what ``label`` receives."""
        history = self.history.setdefault(label, [])

        class Noting(RoundRobinPartitionAssignor):
            @classmethod
            def on_assignment(cls, assignment: Any) -> None:
                history.append({f"{tp.topic}:{tp.partition}" for tp in assignment.partitions()})

        return Noting

    def rebalances(self) -> int:
        return sum(map(len, self.history.values()))

    def owned(self, label: str) -> set[str]:
        found = self.history.get(label)
        return found[-1] if found else set()

    async def split(self, labels: list[str], partitions: set[str]) -> bool:
        """Every worker owns partitions of its own, and together all of them."""
        owned = [self.owned(label) for label in labels]
        together = set().union(*owned)
        return all(owned) and together == partitions and sum(map(len, owned)) == len(together)


async def partitions_with_records(settings: JourneySettings, topic: str, count: int) -> set[str]:
    consumer = make_consumer(settings, group_id=f"reader-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(count)]
        start, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {f"{tp.topic}:{tp.partition}" for tp in tps if end[tp] > start[tp]}


async def test_two_workers_equal_one_and_replay_changes_nothing(
    db, producer, settings_overrides, make_tenant
):
    run = uuid.uuid4().hex[:6]
    one = journey_settings_for(settings_overrides, topic_normalized=f"journey-one-{run}")
    two = journey_settings_for(settings_overrides, topic_normalized=f"journey-two-{run}")
    await ensure_topics(one, [one.topic_normalized, two.topic_normalized], partitions=4)
    t1, t2 = await make_tenant(), await make_tenant()
    people = 40
    partitions = {f"{two.topic_normalized}:{p}" for p in range(4)}
    second = journey_settings_for(
        settings_overrides, topic_normalized=two.topic_normalized, consumer_group=two.consumer_group
    )

    async def done(tenant) -> bool:
        snap = await snapshot(db, tenant.id)
        return snap["events"] == people * 4

    assignments = Assignments()
    single = Worker(one)
    pair = [
        Worker(two, partition_assignment_strategy=(assignments.assignor("a"),)),
        Worker(second, partition_assignment_strategy=(assignments.assignor("b"),)),
    ]
    try:
        # Both members of the pair own partitions before the first event exists.
        await eventually(lambda: assignments.split(["a", "b"], partitions), timeout=60)
        settled = assignments.rebalances()
        for tenant, cfg in ((t1, one), (t2, two)):
            events = [e for i in range(people) for e in person_events(tenant.id, i, run)]
            # Send the late agent.joined events last: per-customer order comes from event time.
            events.sort(key=lambda e: e["id"].endswith("-d"))
            await send(producer, cfg, *events)
        await eventually(lambda: done(t1), timeout=60)
        await eventually(lambda: done(t2), timeout=60)
        moved = assignments.rebalances() - settled
    finally:
        for w in (single, *pair):
            await w.stop()
    # Nothing moved while they worked, so each applied the events of the partitions it owned,
    # and each owned partitions that had events.
    assert moved == 0, "a rebalance during the run: who applied what is unknown"
    filled = await partitions_with_records(two, two.topic_normalized, 4)
    for label in ("a", "b"):
        assert assignments.owned(label) & filled, f"worker {label} owned no partition with events"
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
