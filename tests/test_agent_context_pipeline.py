"""What an agent needs, through the whole pipeline on the real broker and PostgreSQL:
raw topic → ingest → journey → activity → alerts → engagement topic → journey → the agent's
context (API and page). The customer's name, recent purchases, message excerpts and fact values
(masked when sensitive), and a declining customer's score and churn alert within seconds, its
acknowledgement and its resolution; a replayed old engagement message changes nothing."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.alerts.app import create_app as create_alerts_app
from services.alerts.config import AlertsSettings
from services.alerts.worker import run as run_alerts
from services.ingest.config import IngestSettings
from services.ingest.worker import run as run_ingest
from services.journey.app import create_app as create_journey_app
from services.journey.config import JourneySettings
from services.journey.context.engagement import run as run_engagement
from services.journey.context.schemas import ContextPublic, TimelinePage
from services.journey.worker import run as run_journey
from shared.db import Database
from shared.events.engagement import ChurnAlert, CustomerEngagementChanged
from shared.kafka import ensure_topics
from tests.alerts.conftest import Clock
from tests.journey.conftest import journey_settings_for
from tests.support import TenantFactory, app_client, cloud_event, eventually
from tests.topics import committed

if TYPE_CHECKING:
    from tests.support import TestTenant

MODEL = {
    "weights": {"activity": 50, "utilisation": 50, "cases": 0, "friction": 0,
                "satisfaction": 0, "sentiment": 0},
    "thresholds": {"alert_below": 50, "rearm_margin": 10, "cooldown_hours": 24,
                   "drop_points": 15, "drop_days": 10},
}  # fmt: skip
# From a declining customer's event on the raw topic to the churn alert in the agent's context.
ALERT_SECONDS = 15.0
# The test card's number, spaced or not (its first four digits alone may be in a UUID by chance)
CARD_DIGITS = re.compile(r"4111[ -]?1111")


def replay_of(tenant: str, customer: str, shown: dict[str, Any]) -> CustomerEngagementChanged:
    """The engagement message the context was built from, as alerts published it then (rebuilt
    from what the context shows: another alerts relay of this test session may have published
    the original to its own topic, into the same journey database)."""
    return CustomerEngagementChanged(
        tenant=tenant,
        customer_id=customer,
        version=shown["version"],
        changed_at=datetime.fromisoformat(shown["scored_at"]),
        score=shown["score"],
        scored_at=datetime.fromisoformat(shown["scored_at"]),
        segment=shown["segment"],
        threshold=shown["threshold"],
        contributions=shown["contributions"],
        alert=ChurnAlert.model_validate(shown["alert"]),
    )


@dataclass
class Pipeline:
    journey: httpx.AsyncClient
    alerts: httpx.AsyncClient
    producer: AIOKafkaProducer
    journey_settings: JourneySettings
    tenant: TestTenant  # every scope
    agent_key: str  # context:read only
    clock: Clock  # the alerts worker's clock (the test moves it)
    t0: datetime

    async def send(self, *events: dict[str, Any]) -> None:
        """Through the raw topic, as channel systems send."""
        for event in events:
            key = f"{event['tenant']}|{event['data']['identifiers'][0]['value']}"
            await self.producer.send_and_wait(
                self.journey_settings.topic_raw, orjson.dumps(event), key=key.encode()
            )

    @property
    def agent(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agent_key}"}

    async def context_when(
        self, email: str, check: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            r = await self.journey.get(
                "/v1/context",
                params={"identifier_type": "email", "value": email},
                headers=self.agent,
            )
            return r.json() if r.status_code == 200 and check(r.json()) else None

        return await eventually(probe, timeout=timeout, interval=0.05)


@pytest.fixture(scope="module")
async def pipeline(
    settings_overrides: dict[str, Any], db: Database, producer: AIOKafkaProducer
) -> AsyncIterator[Pipeline]:
    run = uuid.uuid4().hex[:8]
    overrides = {
        **settings_overrides,
        "log_level": "WARNING",
        "topic_raw": f"agent-{run}.raw",
        "topic_normalized": f"agent-{run}.normalized",
        "topic_activity": f"agent-{run}.activity",
        "topic_engagement": f"agent-{run}.engagement",
        "topic_dead_letter": f"agent-{run}.deadletter",
    }
    journey_settings = journey_settings_for(
        overrides, engagement_consumer_group=f"agent-eng-{run}", context_cache_mb=16
    )
    ingest_settings = IngestSettings(
        **{**overrides, "consumer_group": f"agent-ingest-{run}", "session_timeout_ms": 6000}
    )
    alerts_settings = AlertsSettings(
        **overrides, consumer_group=f"agent-alerts-{run}", consumer_session_timeout_ms=6000
    )
    await ensure_topics(journey_settings, partitions=2)
    clock = Clock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=60))
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_ingest(ingest_settings, stop=stop)),
        asyncio.create_task(run_journey(journey_settings, stop=stop)),
        asyncio.create_task(run_engagement(journey_settings, stop=stop)),
        asyncio.create_task(run_alerts(alerts_settings, stop=stop, clock=clock)),
    ]
    tenants = TenantFactory(db)
    tenant = await tenants()
    agent_key = await tenants.key(tenant, scopes=["context:read"])
    try:
        async with (
            app_client(create_journey_app(journey_settings)) as journey,
            app_client(create_alerts_app(alerts_settings)) as alerts,
        ):
            put = await alerts.put("/v1/engagement-model", json=MODEL, headers=tenant.headers)
            assert put.status_code == 200, put.text
            yield Pipeline(
                journey, alerts, producer, journey_settings, tenant, agent_key, clock, clock.now
            )
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)


async def signed_in_page(client: httpx.AsyncClient, key: str, path: str) -> str:
    """The page at ``path`` after signing in with ``key`` (the sign-in form, CSRF included)."""
    form = await client.get("/app/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    signed = await client.post(
        "/app/sign-in", data={"key": key, "next": path, "csrf_token": token.group(1)}
    )
    assert signed.status_code == 303, signed.text
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return page.text


async def test_the_agent_sees_the_name_purchases_excerpts_and_facts_masked_when_sensitive(
    pipeline: Pipeline,
):
    p, tenant = pipeline, pipeline.tenant.id
    email = f"ada.{uuid.uuid4().hex[:6]}@shop.test"
    who = [{"type": "email", "value": email, "verified_by": "login"}]
    now = datetime.now(UTC)
    chat = (
        "Hello, my parcel for order O-1001 never arrived. I have been waiting for two weeks "
        "and nobody answers my e-mails; I would like a refund or a new delivery this week please."
    )
    await p.send(
        cloud_event(tenant=tenant, type="identity.linked", identifiers=who, channel="web",
                    time=now - timedelta(minutes=9), traits={"name": "Ada Lovelace",
                                                             "tier": "gold"}),
        cloud_event(tenant=tenant, type="purchase.completed", identifiers=who, channel="web",
                    time=now - timedelta(minutes=8), order_id="O-1001", amount=129.9,
                    currency="EUR"),
        cloud_event(tenant=tenant, type="message.received", identifiers=who, channel="web_chat",
                    time=now - timedelta(minutes=7), text=chat, sentiment=-0.4),
        cloud_event(tenant=tenant, type="message.received", identifiers=who, channel="sms",
                    time=now - timedelta(minutes=6), text="my card is 4111 1111 1111 1111",
                    sensitive=True),
        cloud_event(tenant=tenant, type="fact.collected", identifiers=who, channel="web_chat",
                    time=now - timedelta(minutes=5), name="delivery_address",
                    value="12 Byron Road, London"),
        cloud_event(tenant=tenant, type="fact.collected", identifiers=who, channel="phone",
                    time=now - timedelta(minutes=4), name="date_of_birth", value="1815-12-10",
                    sensitive=True),
    )  # fmt: skip
    ctx = await p.context_when(email, lambda c: c["event_count"] >= 6)
    ContextPublic.model_validate(ctx)  # the documented schema is what is served

    assert ctx["summary"]["who"] == "Ada Lovelace"  # from traits, not "email ada…"
    assert ctx["summary"]["text"].startswith("Ada Lovelace.")
    assert [(x["order_id"], x["amount"], x["currency"]) for x in ctx["purchases"]] == [
        ("O-1001", 129.9, "EUR")
    ]
    recent = {(i["type"], i.get("channel")): i for i in ctx["recent"]}
    excerpt = recent["message.received", "web_chat"]["excerpt"]
    assert excerpt.startswith("Hello, my parcel for order O-1001 never arrived.")
    assert len(excerpt) <= 160
    assert excerpt.endswith("…")
    assert len(chat) > 160
    assert recent["message.received", "sms"]["excerpt"] == "••••"
    assert recent["fact.collected", "web_chat"]["value"] == "12 Byron Road, London"
    secret = recent["fact.collected", "phone"]
    assert (secret["fact"], secret["value"], secret["masked"]) == ("date_of_birth", "••••", True)
    assert recent["purchase.completed", "web"]["order_id"] == "O-1001"
    assert not CARD_DIGITS.search(orjson.dumps(ctx).decode())
    assert "1815-12-10" not in orjson.dumps(ctx).decode()

    url = f"/v1/customers/{ctx['customer_id']}/timeline"
    page = (await p.journey.get(url, headers=p.agent)).json()
    TimelinePage.model_validate(page)
    assert [i.get("excerpt") or i.get("value") for i in page["items"] if i.get("masked")] == [
        "••••",
        "••••",
    ]
    refused = await p.journey.get(url, params={"reveal_sensitive": "true"}, headers=p.agent)
    assert refused.status_code == 403
    revealed = await p.journey.get(
        url, params={"reveal_sensitive": "true"}, headers=p.tenant.headers
    )
    assert revealed.status_code == 200
    shown = orjson.dumps(revealed.json()).decode()
    assert "1815-12-10" in shown
    assert "4111 1111 1111 1111" in shown
    revealed_ctx = await p.journey.get(
        f"/v1/customers/{ctx['customer_id']}/context",
        params={"reveal_sensitive": "true"},
        headers=p.tenant.headers,
    )
    assert "1815-12-10" in revealed_ctx.text

    html = await signed_in_page(
        p.journey, p.agent_key, f"/app/agent/customers/{ctx['customer_id']}"
    )
    assert '<h1 id="who-title">Ada Lovelace</h1>' in html
    assert 'data-order="O-1001"' in html
    assert "129.90 EUR" in html
    assert "Hello, my parcel for order O-1001 never arrived." in html
    assert "12 Byron Road, London" in html
    assert "1815-12-10" not in html
    assert not CARD_DIGITS.search(html)


async def test_a_declining_customers_churn_alert_reaches_the_agent_within_seconds(
    pipeline: Pipeline,
):
    p, tenant, t0 = pipeline, pipeline.tenant.id, pipeline.t0
    email = f"bo.{uuid.uuid4().hex[:6]}@corp.test"
    who = [{"type": "email", "value": email, "verified_by": "login"}]

    def usage(at: datetime, active: int) -> dict[str, Any]:
        return cloud_event(tenant=tenant, type="product.used", identifiers=who, channel="app",
                           time=at, feature="reports", active_seats=active, purchased_seats=10,
                           )  # fmt: skip

    def engagement(check: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
        return lambda c: c["engagement"] is not None and check(c["engagement"])

    # healthy: busy, every seat used
    p.clock.set(t0)
    await p.send(*(usage(t0 - timedelta(hours=h), 10) for h in range(12)))
    healthy = await p.context_when(email, engagement(lambda e: e["score"] == 100.0))
    assert healthy["engagement"]["alert"] is None
    assert healthy["engagement"]["at_risk"] is False
    assert healthy["engagement"]["threshold"] == 50
    assert healthy["summary"]["churn_risk"] is None
    cid = healthy["customer_id"]

    async def all_twelve_scored() -> bool:
        """The score reaches 100 before the last events are scored; one scored after the clock
        moves would record a decayed daily peak, and the drop rule would fire as well."""
        r = await p.alerts.get(f"/v1/customers/{cid}/engagement", headers=p.tenant.headers)
        assert r.status_code == 200, r.text
        return len({i for point in r.json()["history"] for i in point["event_ids"]}) == 12

    await eventually(all_twelve_scored)

    # four weeks on: little use, two seats of ten → an alert, shown to the agent within seconds
    p.clock.set(t0 + timedelta(days=28))
    sent = time.monotonic()
    await p.send(usage(p.clock.now, 2))
    risky = await p.context_when(email, engagement(lambda e: e["alert"] is not None))
    took = time.monotonic() - sent
    print(f"churn alert reached the agent's context {took:.2f}s after the event")  # noqa: T201
    assert took < ALERT_SECONDS
    shown = risky["engagement"]
    assert shown["score"] < 50
    assert shown["at_risk"] is True
    assert shown["alert"]["status"] == "open"
    assert shown["alert"]["rules"] == ["below_threshold"]
    assert shown["scored_at"].startswith((t0 + timedelta(days=28)).date().isoformat())
    assert risky["summary"]["churn_risk"].startswith(
        f"At risk of churning: engagement {shown['score']:.1f}"
    )
    assert any(
        s["action"].startswith("treat as a retention risk") for s in risky["summary"]["next_steps"]
    )
    alerts = (await p.alerts.get("/v1/alerts", params={"customer_id": cid},
                                 headers=p.tenant.headers)).json()["items"]  # fmt: skip
    assert [a["id"] for a in alerts] == [shown["alert"]["alert_id"]]
    html = await signed_in_page(p.journey, p.agent_key, f"/app/agent/customers/{cid}")
    assert "Churn alert open" in html
    assert f"{shown['score']:.1f}" in html

    # customer success acknowledges it: the agent sees that too
    ack = await p.alerts.post(
        f"/v1/alerts/{shown['alert']['alert_id']}/ack", headers=p.tenant.headers
    )
    assert ack.status_code == 200, ack.text
    await p.context_when(
        email, engagement(lambda e: (e["alert"] or {}).get("status") == "acknowledged")
    )
    stale = replay_of(tenant, cid, risky["engagement"])  # the open alert's message, again

    # recovery: busy again, most seats used → the alert resolves itself, the agent sees it
    p.clock.set(t0 + timedelta(days=29, hours=2))
    await p.send(*(usage(p.clock.now, 8) for _ in range(6)))
    recovered = await p.context_when(email, engagement(lambda e: e["alert"] is None))
    assert recovered["engagement"]["score"] >= 60
    assert recovered["engagement"]["at_risk"] is False
    assert recovered["summary"]["churn_risk"] is None

    # a replayed old message (the open alert) does not overwrite the newer state
    meta = await p.producer.send_and_wait(
        p.journey_settings.topic_engagement, stale.to_json(), key=stale.kafka_key()
    )

    async def consumed() -> bool:
        offsets = await committed(
            p.journey_settings,
            p.producer,
            p.journey_settings.engagement_consumer_group,
            p.journey_settings.topic_engagement,
        )
        return offsets.get(meta.partition, 0) > meta.offset

    await eventually(consumed, timeout=30)
    after = (await p.journey.get(f"/v1/customers/{cid}/context", headers=p.agent)).json()
    assert after["engagement"]["alert"] is None
    assert after["engagement"]["version"] >= recovered["engagement"]["version"] > stale.version
