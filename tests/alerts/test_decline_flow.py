"""End to end through the real broker, PostgreSQL and a local HTTP receiver: a customer whose
usage and seat utilisation decline is alerted once, signed and explained; recovery resolves."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import timedelta

import orjson
from aiokafka import AIOKafkaProducer
from pytest_httpserver import HTTPServer

from services.alerts import notifier, worker
from services.alerts.app import create_app
from services.alerts.config import AlertsSettings
from shared.kafka import make_consumer
from tests.alerts.conftest import T0, WEBHOOK_SECRET, Clock, running, usage
from tests.support import TenantFactory, app_client, eventually

MODEL = {
    "weights": {"activity": 50, "utilisation": 50, "cases": 0, "friction": 0,
                "satisfaction": 0, "sentiment": 0},
    "thresholds": {"alert_below": 50, "rearm_margin": 10, "cooldown_hours": 24,
                   "drop_points": 15, "drop_days": 10},
}  # fmt: skip


async def test_declining_customer_is_alerted_once_then_resolved_then_alerted_again(
    alerts_settings: AlertsSettings,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    receiver: HTTPServer,
):
    tenant = await make_tenant(scopes=["alerts:read", "alerts:write"])
    customer, account = f"cust-{uuid.uuid4().hex[:6]}", "acct-1"
    traits = {"csm_owner": "olga", "tier": "gold"}
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    clock = Clock(T0)

    async def send(*activities) -> str:
        """Send in order; returns the last event's id, to wait for it by."""
        for a in activities:
            await producer.send_and_wait(
                alerts_settings.topic_activity, a.to_json(), key=a.kafka_key()
            )
        return str(activities[-1].event["id"])

    async with app_client(create_app(alerts_settings)) as api:
        put = await api.put("/v1/engagement-model", json=MODEL, headers=tenant.headers)
        assert put.status_code == 200, put.text
        hook = {"name": "cs-hook", "type": "webhook", "url": receiver.url_for("/hook"),
                "secret": WEBHOOK_SECRET}  # fmt: skip
        channels = {"channels": [hook]}
        assert (
            await api.put("/v1/notification-channels", json=channels, headers=tenant.headers)
        ).status_code == 200

        async def engagement():
            r = await api.get(f"/v1/customers/{customer}/engagement", headers=tenant.headers)
            return r.json() if r.status_code == 200 else None

        async def processed(event_id: str):
            """The engagement once the event is scored (a batch may score several at once)."""
            body = await engagement()
            scored = body and any(event_id in h["event_ids"] for h in body["history"])
            return body if scored else None

        async def alerts(**params):
            r = await api.get("/v1/alerts", params=params, headers=tenant.headers)
            return r.json()["items"]

        # a poison record first: it is dead-lettered and does not stall the consumer
        await producer.send_and_wait(alerts_settings.topic_activity, b"{not json", key=b"x")
        async with (
            running(worker.run, alerts_settings, clock=clock),
            running(notifier.run, alerts_settings),
        ):
            # healthy: 12 uses with every seat active
            sent = await send(*(usage(tenant=tenant.id, customer=customer, account=account,
                               traits=traits, at=T0 - timedelta(hours=h), active=10)
                         for h in range(12)))  # fmt: skip
            body = await eventually(lambda: processed(sent))
            assert body["score"] == 100.0

            # three weeks on: less use, half the seats
            clock.set(T0 + timedelta(days=20))
            sent = await send(usage(tenant=tenant.id, customer=customer, at=clock.now, active=5))
            body = await eventually(lambda: processed(sent))
            assert 50 < body["score"] < 56
            assert await alerts() == []

            # a week later: two seats of ten, little use → one alert (below threshold and drop)
            clock.set(T0 + timedelta(days=28))
            sent = await send(usage(tenant=tenant.id, customer=customer, at=clock.now, active=2))
            await eventually(lambda: processed(sent))
            opened = await eventually(alerts)
            assert len(opened) == 1
            alert = opened[0]
            assert alert["status"] == "open"
            assert alert["owner"] == "olga"
            assert set(alert["rules"]) == {"below_threshold", "score_drop"}
            explanation = alert["explanation"]
            assert explanation["score"] < 50
            assert explanation["threshold"] == 50
            assert explanation["change"] < -15
            assert explanation["previous_score"] > 50
            assert set(explanation["contributions"]) == {"activity", "utilisation", "cases",
                                                         "friction"}  # fmt: skip
            assert explanation["factors"]["utilisation"] == 0.2
            assert explanation["recent_events"][-1]["active_seats"] == 2

            # delivered once, signed with the channel secret, with its explanation
            await eventually(lambda: _count(receiver, 1))
            request = receiver.log[0][0]
            body_bytes = request.get_data()
            expected = hmac.new(WEBHOOK_SECRET.encode(), body_bytes, hashlib.sha256).hexdigest()
            assert request.headers["X-Waypoint-Signature"] == f"sha256={expected}"
            assert request.headers["Idempotency-Key"].startswith(alert["id"])
            delivered = orjson.loads(body_bytes)
            assert delivered["alert_id"] == alert["id"]
            assert delivered["explanation"]["contributions"] == explanation["contributions"]
            assert "weakest factors" in delivered["explanation"]["summary"]

            # further decline a day later: no second alert
            clock.set(T0 + timedelta(days=29))
            sent = await send(usage(tenant=tenant.id, customer=customer, at=clock.now, active=1))
            await eventually(lambda: processed(sent))
            assert len(await alerts()) == 1

            # recovery: busy again, most seats used → the alert resolves itself
            clock.set(T0 + timedelta(days=29, hours=2))
            sent = await send(*(usage(tenant=tenant.id, customer=customer, at=clock.now, active=8)
                         for _ in range(6)))  # fmt: skip
            await eventually(lambda: processed(sent))
            resolved = await eventually(lambda: alerts(status="resolved"))
            assert resolved[0]["id"] == alert["id"]
            assert resolved[0]["resolution"] == "recovered"
            # … and the channel that got the alert hears of its resolution, once
            await eventually(lambda: _count(receiver, 2))
            notice = receiver.log[1][0]
            assert orjson.loads(notice.get_data())["type"] == "waypoint.alert.resolved"
            assert orjson.loads(notice.get_data())["resolution"] == "recovered"
            assert notice.headers["Idempotency-Key"].endswith(":resolved")

            # three weeks later it declines again: a new alert, delivered
            clock.set(T0 + timedelta(days=50))
            await send(usage(tenant=tenant.id, customer=customer, at=clock.now, active=1))
            second = await eventually(lambda: alerts(status="open"))
            assert second[0]["id"] != alert["id"]
            assert "below_threshold" in second[0]["rules"]
            await eventually(lambda: _count(receiver, 3))

        # exactly one delivery per alert, and one notice of the first one's resolution
        sent = [orjson.loads(r.get_data()) for r, _ in receiver.log]
        assert [(p["type"], p["alert_id"]) for p in sent] == [
            ("waypoint.alert.opened", alert["id"]),
            ("waypoint.alert.resolved", alert["id"]),
            ("waypoint.alert.opened", second[0]["id"]),
        ]

    # the poison record went to the dead-letter topic with its reason
    dead = make_consumer(alerts_settings, alerts_settings.topic_dead_letter,
                         group_id=f"dlq-{uuid.uuid4().hex[:6]}")  # fmt: skip
    await dead.start()
    try:

        async def poisoned():
            batches = await dead.getmany(timeout_ms=500)
            return [r for rs in batches.values() for r in rs if r.value == b"{not json"]

        record = (await eventually(poisoned))[0]
        assert dict(record.headers)["waypoint-reason"] == b"invalid_activity"
    finally:
        await dead.stop()


async def _count(server: HTTPServer, n: int) -> bool:
    assert len(server.log) <= n, f"more deliveries than expected: {len(server.log)}"
    return len(server.log) == n
