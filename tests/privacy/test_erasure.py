"""Erasure that survives replay (issue 12, item 1), through the whole pipeline on the real broker
and PostgreSQL: erase a customer, then replay every topic from offset 0 with fresh consumer
groups, redrive and send late events; the customer comes back in no service, the other customer
stays, and the journey map's counts equal a rebuild from the remaining events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.alerts.config import AlertsSettings
from services.alerts.privacy import run as run_alerts_privacy
from services.alerts.worker import run as run_alerts
from services.ingest.config import IngestSettings
from services.ingest.privacy import run as run_ingest_privacy
from services.ingest.worker import run as run_ingest
from services.journey.app import create_app as create_journey_app
from services.journey.config import JourneySettings
from services.journey.maps.maintain import drain
from services.journey.maps.rebuild import rebuild_maps
from services.journey.privacy.consumer import run as run_journey_privacy
from services.journey.worker import run as run_journey
from shared.db import Database
from shared.kafka import ensure_topics, make_consumer
from tests.support import TenantFactory, app_client, cloud_event, eventually
from tests.topics import committed


@dataclass
class Stack:
    run: str
    overrides: dict[str, Any]
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    def settings(self, generation: str) -> tuple[IngestSettings, JourneySettings, AlertsSettings]:
        """Each service's settings with consumer groups of one ``generation`` (a new one
        starts every topic again from offset 0)."""
        g = f"{self.run}-{generation}"
        return (
            IngestSettings(**self.overrides, consumer_group=f"er-ingest-{g}"),
            JourneySettings(
                **self.overrides,
                consumer_group=f"er-journey-{g}",
                engagement_consumer_group=f"er-eng-{g}",
            ),
            AlertsSettings(**self.overrides, consumer_group=f"er-alerts-{g}"),
        )

    def start(self, generation: str) -> None:
        ingest, journey, alerts = self.settings(generation)
        runs: list[Coroutine[Any, Any, None]] = [
            run_ingest(ingest, stop=self.stop),
            run_journey(journey, stop=self.stop),
            run_alerts(alerts, stop=self.stop),
            run_ingest_privacy(ingest, stop=self.stop),
            run_journey_privacy(journey, stop=self.stop),
            run_alerts_privacy(alerts, stop=self.stop),
        ]
        self.tasks += [asyncio.create_task(r) for r in runs]


@pytest.fixture
async def stack(settings_overrides: dict[str, Any]) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:8]
    overrides = {
        **settings_overrides,
        "log_level": "WARNING",
        "topic_raw": f"er-{run}.raw",
        "topic_normalized": f"er-{run}.normalized",
        "topic_activity": f"er-{run}.activity",
        "topic_engagement": f"er-{run}.engagement",
        "topic_dead_letter": f"er-{run}.deadletter",
        "topic_privacy": f"er-{run}.privacy",
        "session_timeout_ms": 6000,
        "consumer_session_timeout_ms": 6000,
        # The privacy processes also purge; other tests' old rows share this database.
        "retention_raw_events_days": 0,
        "retention_dead_letters_days": 0,
        "retention_timelines_days": 0,
        "retention_delivery_logs_days": 0,
    }
    stack = Stack(run, overrides, asyncio.Event(), [])
    await ensure_topics(stack.settings("a")[1], partitions=2)
    try:
        yield stack
    finally:
        stack.stop.set()
        await asyncio.wait_for(asyncio.gather(*stack.tasks, return_exceptions=True), 60)


async def _rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.session() as session:
        return list((await session.execute(text(sql), params)).all())


async def _traces(db: Database, tenant: str, customer_ids: list[str], email: str) -> list[str]:
    """Where the erased customer still shows, in any service's tables."""
    found = []
    checks = {
        "ingest.event": "SELECT 1 FROM ingest.event WHERE tenant_id = :t "
        "AND envelope::text LIKE :like",
        "ingest.dead_letter": "SELECT 1 FROM ingest.dead_letter WHERE tenant_id = :t "
        "AND payload LIKE :like",
        "journey.event": "SELECT 1 FROM journey.event WHERE tenant_id = :t "
        "AND (envelope::text LIKE :like OR customer_id::text = ANY(:ids))",
        "journey.identifier": "SELECT 1 FROM journey.identifier WHERE tenant_id = :t "
        "AND (value LIKE :like OR customer_id::text = ANY(:ids))",
        "journey.customer": "SELECT 1 FROM journey.customer WHERE tenant_id = :t "
        "AND id::text = ANY(:ids)",
        "journey.context": "SELECT 1 FROM journey.context WHERE tenant_id = :t "
        "AND (customer_id::text = ANY(:ids) OR doc::text LIKE :like)",
        "journey.map_step": "SELECT 1 FROM journey.map_step WHERE tenant_id = :t "
        "AND customer_id::text = ANY(:ids)",
        "journey.map_journey": "SELECT 1 FROM journey.map_journey WHERE tenant_id = :t "
        "AND customer_id::text = ANY(:ids)",
        "alerts.customer_state": "SELECT 1 FROM alerts.customer_state WHERE tenant_id = :t "
        "AND customer_id = ANY(:ids)",
        "alerts.score_history": "SELECT 1 FROM alerts.score_history WHERE tenant_id = :t "
        "AND customer_id = ANY(:ids)",
        "alerts.alert": "SELECT 1 FROM alerts.alert WHERE tenant_id = :t "
        "AND customer_id = ANY(:ids)",
        "auth.audit_log": "SELECT 1 FROM auth.audit_log WHERE tenant_id = :t "
        "AND detail::text LIKE :like",
    }
    for name, sql in checks.items():
        if await _rows(db, sql, t=tenant, ids=customer_ids, like=f"%{email}%"):
            found.append(name)
    return found


async def _map(db: Database, tenant: str) -> tuple[list[Any], list[Any]]:
    """The map's aggregates, zero rows and trailing zeros left out (a subtraction may leave
    zeros where a rebuild writes nothing)."""

    def trim(vector: list[int]) -> tuple[int, ...]:
        out = list(vector)
        while out and out[-1] == 0:
            out.pop()
        return tuple(out)

    nodes = await _rows(
        db,
        "SELECT kind, grain, period, activity, stat, v FROM journey.map_node "
        "WHERE tenant_id = :t ORDER BY 1, 2, 3, 4, 5",
        t=tenant,
    )
    edges = await _rows(
        db,
        "SELECT kind, grain, period, source, target, bucket, n, us FROM journey.map_edge "
        "WHERE tenant_id = :t ORDER BY 1, 2, 3, 4, 5, 6",
        t=tenant,
    )
    return (
        [(*r[:5], trim(r[5])) for r in nodes if any(r[5])],
        [(*r[:6], trim(r[6]), trim(r[7])) for r in edges if any(r[6])],
    )


async def _caught_up(
    stack: Stack, producer: AIOKafkaProducer, generation: str, db: Database
) -> None:
    """Every consumer group of ``generation`` has committed the end of its topic."""
    ingest, journey, alerts = stack.settings(generation)
    pairs = [
        (ingest.consumer_group, ingest.topic_raw),
        (journey.consumer_group, journey.topic_normalized),
        (alerts.consumer_group, alerts.topic_activity),
    ]
    reader = make_consumer(ingest, group_id=f"ends-{uuid.uuid4().hex[:8]}")
    await reader.start()
    try:

        async def done() -> bool:
            for group, topic in pairs:
                parts = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
                ends = await reader.end_offsets(parts)
                have = await committed(ingest, producer, group, topic)
                if any(have.get(p.partition, 0) < ends[p] for p in parts):
                    return False
            return True

        await eventually(done, timeout=90, interval=0.3)
    finally:
        await reader.stop()


def _dropped(service: str) -> float:
    return (
        REGISTRY.get_sample_value("waypoint_erased_events_dropped_total", {"service": service})
        or 0.0
    )


async def test_an_erased_customer_does_not_come_back_after_replaying_every_topic(
    stack: Stack, producer: AIOKafkaProducer, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant()
    agent = {"Authorization": f"Bearer {await make_tenant.key(tenant, scopes=['context:read'])}"}
    eraser = {"Authorization": f"Bearer {await make_tenant.key(tenant, scopes=['privacy:erase'])}"}
    ingest_settings, journey_settings, _ = stack.settings("a")
    erased_email = f"gone.{uuid.uuid4().hex[:6]}@shop.test"
    kept_email = f"kept.{uuid.uuid4().hex[:6]}@shop.test"
    phone = "+14155550" + str(uuid.uuid4().int % 900 + 100)
    now = datetime.now(UTC)

    def events(email: str, extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
        who = [{"type": "email", "value": email, "verified_by": "login"}]
        chat, call = uuid.uuid4().hex, uuid.uuid4().hex
        return [
            cloud_event(tenant=tenant.id, type="contact.started", identifiers=who + extra,
                        channel="web_chat", touchpoint="chat", interaction_id=chat,
                        time=now - timedelta(minutes=9)),
            cloud_event(tenant=tenant.id, type="message.received", identifiers=who,
                        channel="web_chat", touchpoint="chat", interaction_id=chat,
                        time=now - timedelta(minutes=8), text=f"I am {email}, card 4111",
                        sensitive=True),
            cloud_event(tenant=tenant.id, type="fact.collected", identifiers=who,
                        channel="phone", touchpoint="ivr", interaction_id=call,
                        time=now - timedelta(minutes=7), name="address",
                        value=f"1 Road of {email}"),
            cloud_event(tenant=tenant.id, type="contact.ended", identifiers=who,
                        channel="phone", touchpoint="ivr", interaction_id=call,
                        time=now - timedelta(minutes=6)),
        ]  # fmt: skip

    erased_events = events(erased_email, [{"type": "phone", "value": phone}])
    kept_events = events(kept_email, [])
    send: Callable[[dict[str, Any]], Any] = lambda e: producer.send_and_wait(  # noqa: E731
        ingest_settings.topic_raw, orjson.dumps(e)
    )
    stack.start("a")
    for event in erased_events + kept_events:
        await send(event)

    async with app_client(create_journey_app(journey_settings)) as journey:

        async def context(email: str) -> httpx.Response:
            return await journey.get(
                "/v1/context", params={"identifier_type": "email", "value": email}, headers=agent
            )

        async def complete(email: str) -> dict[str, Any] | None:
            r = await context(email)
            return r.json() if r.status_code == 200 and r.json()["event_count"] == 4 else None

        erased = await eventually(lambda: complete(erased_email), timeout=60)
        await eventually(lambda: complete(kept_email), timeout=60)
        cid = erased["customer_id"]

        async def scored() -> bool:
            sql = "SELECT 1 FROM alerts.customer_state WHERE tenant_id = :t AND customer_id = :c"
            return bool(await _rows(db, sql, t=tenant.id, c=cid))

        await eventually(scored, timeout=60)
        await drain(db)
        assert await _traces(db, tenant.id, [cid], erased_email)  # it is there before
        with_both = await _map(db, tenant.id)

        # Erase: scope checked, a receipt, every service reports.
        refused = await journey.post(f"/v1/customers/{cid}/erase", headers=agent)
        assert refused.status_code == 403
        asked = await journey.post(f"/v1/customers/{cid}/erase", headers=eraser)
        assert asked.status_code == 202, asked.text
        erasure = asked.json()
        assert erasure["customer_id"] == cid
        assert erased_email not in asked.text

        async def receipt() -> dict[str, Any] | None:
            r = await journey.get(f"/v1/erasures/{erasure['id']}", headers=eraser)
            return r.json() if r.json()["status"] == "done" else None

        done = await eventually(receipt, timeout=60)
        counts = {s["service"]: s["counts"] for s in done["services"]}
        assert counts["ingest"]["events"] == 4
        assert counts["journey"]["events"] == 4
        assert counts["alerts"]["customer_state"] == 1
        other = await make_tenant()
        hidden = await journey.get(f"/v1/erasures/{erasure['id']}", headers=other.headers)
        assert hidden.status_code == 404
        await drain(db)
        assert await _traces(db, tenant.id, [cid], erased_email) == []
        assert (await context(erased_email)).status_code == 404
        audit = await _rows(
            db,
            "SELECT action, target FROM auth.audit_log WHERE tenant_id = :t "
            "AND action = 'customer.erasure_requested'",
            t=tenant.id,
        )
        assert audit == [("customer.erasure_requested", cid)]

        # Replay every topic from offset 0 (new consumer groups), redrive and a late event.
        dropped = {s: _dropped(s) for s in ("ingest", "journey", "alerts")}
        stack.start("b")
        for event in erased_events[:2]:  # a redrive: the same records again
            await send(event)
        late = cloud_event(
            tenant=tenant.id,
            type="contact.started",
            identifiers=[{"type": "phone", "value": phone}],
            channel="phone",
        )
        await send(late)
        await _caught_up(stack, producer, "a", db)
        await _caught_up(stack, producer, "b", db)
        await drain(db)
        assert await _traces(db, tenant.id, [cid], erased_email) == []
        assert (await context(erased_email)).status_code == 404
        phone_lookup = await journey.get(
            "/v1/context", params={"identifier_type": "phone", "value": phone}, headers=agent
        )
        assert phone_lookup.status_code == 404
        assert _dropped("ingest") >= dropped["ingest"] + 4 + 2 + 1
        assert _dropped("journey") >= dropped["journey"] + 4
        assert _dropped("alerts") >= dropped["alerts"] + 1
        kept = await context(kept_email)
        assert kept.status_code == 200
        assert kept.json()["event_count"] == 4

        # The map's counts are what a rebuild from the remaining events gives.
        before = await _map(db, tenant.id)
        assert before[0]  # the kept customer is still counted
        assert before != with_both  # the erased one is not
        await rebuild_maps(db, tenant=tenant.id)
        assert await _map(db, tenant.id) == before
