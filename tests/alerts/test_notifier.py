"""The notifier against real receivers: retries until a receiver recovers, exactly one accepted
delivery per channel, survival of a killed notifier, Slack-compatible and SMTP channels."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from pytest_httpserver import HTTPServer
from sqlalchemy import text
from werkzeug import Request, Response

from services.alerts import notifier
from services.alerts.app import create_app
from services.alerts.config import AlertsSettings
from shared.db import Database
from shared.embedded import free_port
from tests.alerts.conftest import T0, WEBHOOK_SECRET, apply, running, usage
from tests.support import TenantFactory, app_client, eventually


async def set_channels(settings: AlertsSettings, tenant: Any, *channels: dict) -> None:
    async with app_client(create_app(settings)) as api:
        r = await api.put(
            "/v1/notification-channels", json={"channels": list(channels)}, headers=tenant.headers
        )
        assert r.status_code == 200, r.text


async def open_alert(db: Database, tenant: str) -> str:
    """A healthy customer, then a collapse 60 days later: the engine opens one alert."""
    customer = f"c-{uuid.uuid4().hex[:6]}"
    await apply(db, [usage(tenant=tenant, customer=customer, at=T0, active=10) for _ in range(12)],
                now=T0)  # fmt: skip
    later = T0 + timedelta(days=60)
    effects = await apply(db, [usage(tenant=tenant, customer=customer, at=later, active=0)],
                          now=later)  # fmt: skip
    assert len(effects.opened) == 1
    return str(effects.opened[0]["id"])


class Passes:
    """Counts each running notifier's completed delivery passes (``Notifier.drain``), the
    barrier before asserting that nothing more arrives: a pass that *began* after a point in
    time has seen every row committed before it (the real method runs; it is only counted)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.done: dict[int, int] = {}
        drain = notifier.Notifier.drain

        async def counted(instance: notifier.Notifier) -> int:
            delivered = await drain(instance)
            self.done[id(instance)] = self.done.get(id(instance), 0) + 1
            return delivered

        monkeypatch.setattr(notifier.Notifier, "drain", counted)

    async def since_now(self, *, notifiers: int) -> None:
        """Until each of ``notifiers`` running notifiers has completed a pass begun after now."""
        mark = dict(self.done)

        async def passed() -> bool:
            return len(self.done) >= notifiers and all(
                n >= mark.get(key, 0) + 2 for key, n in self.done.items()
            )

        await eventually(passed)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> Passes:
    return Passes(monkeypatch)


async def outbox(db: Database, alert_id: str) -> list[Any]:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "SELECT o.status, o.attempts, c.name FROM alerts.outbox o "
                "JOIN alerts.notification_channel c ON c.id = o.channel_id "
                "WHERE o.alert_id = :a ORDER BY c.name"
            ),
            {"a": alert_id},
        )
        return rows.all()


async def test_a_failing_or_absent_receiver_gets_the_alert_once_it_recovers(
    alerts_settings: AlertsSettings,
    db: Database,
    make_tenant: TenantFactory,
    receiver: HTTPServer,
    passes: Passes,
):
    tenant = await make_tenant()
    answers = iter([500, 500, 503])
    accepted: list[Request] = []

    def flaky(request: Request) -> Response:
        status = next(answers, 200)
        if status == 200:
            accepted.append(request)
        return Response("busy" if status != 200 else "ok", status=status)

    receiver.expect_request("/flaky", method="POST").respond_with_handler(flaky)
    down_port = free_port()  # nothing listens here yet
    await set_channels(
        alerts_settings,
        tenant,
        {"name": "flaky", "type": "webhook", "url": receiver.url_for("/flaky"),
         "secret": WEBHOOK_SECRET},
        {"name": "down", "type": "webhook", "url": f"http://127.0.0.1:{down_port}/hook",
         "secret": WEBHOOK_SECRET},
    )  # fmt: skip
    alert_id = await open_alert(db, tenant.id)

    late = HTTPServer(host="127.0.0.1", port=down_port, threaded=True)
    late.expect_request("/hook", method="POST").respond_with_data("ok")
    async with running(notifier.run, alerts_settings):
        await eventually(lambda: _has(accepted, 1))
        await eventually(lambda: _retries(db, alert_id, "down", 2))  # refused twice so far
        late.start()
        try:
            await eventually(lambda: _has(late.log, 1))
            await eventually(lambda: _statuses(db, alert_id, ["delivered", "delivered"]))
            await passes.since_now(notifiers=1)  # nothing more arrives once delivered
        finally:
            late.stop()
    assert len(accepted) == 1
    assert len(receiver.log) == 4  # three refusals, one acceptance
    assert len(late.log) == 1
    rows = await outbox(db, alert_id)
    assert [(r.name, r.status) for r in rows] == [("down", "delivered"), ("flaky", "delivered")]
    assert {r.name: r.attempts for r in rows}["flaky"] == 4
    async with db.session() as session:
        log = (
            await session.execute(
                text(
                    "SELECT l.outcome, l.status_code, c.name FROM alerts.delivery_log l "
                    "JOIN alerts.notification_channel c ON c.id = l.channel_id "
                    "WHERE l.alert_id = :a AND l.tenant_id = :t ORDER BY l.id"
                ),
                {"a": alert_id, "t": tenant.id},
            )
        ).all()
    flaky_log = [(o, s) for o, s, name in log if name == "flaky"]
    assert flaky_log == [("retry", 500), ("retry", 500), ("retry", 503), ("delivered", 200)]
    down_log = [(o, s) for o, s, name in log if name == "down"]
    assert down_log[0] == ("retry", None)  # connection refused, retried
    assert down_log[-1] == ("delivered", 200)


async def test_alert_written_while_no_notifier_runs_is_delivered_once_after_start(
    alerts_settings: AlertsSettings,
    db: Database,
    make_tenant: TenantFactory,
    receiver: HTTPServer,
    passes: Passes,
):
    tenant = await make_tenant()
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    await set_channels(alerts_settings, tenant, {"name": "hook", "type": "webhook",
                       "url": receiver.url_for("/hook"), "secret": WEBHOOK_SECRET})  # fmt: skip
    alert_id = await open_alert(db, tenant.id)
    assert [r.status for r in await outbox(db, alert_id)] == ["pending"]  # queued, undelivered
    assert receiver.log == []
    async with running(notifier.run, alerts_settings), running(notifier.run, alerts_settings):
        await eventually(lambda: _has(receiver.log, 1))
        await eventually(lambda: _delivered(db, alert_id))
        await passes.since_now(notifiers=2)  # both have looked again since: two notifiers,
    assert len(receiver.log) == 1  # one delivery
    assert orjson.loads(receiver.log[0][0].get_data())["alert_id"] == alert_id


@pytest.mark.slow
async def test_a_notifier_killed_mid_delivery_is_replaced_and_the_alert_delivered_once(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory, receiver: HTTPServer
):
    """SIGKILL while the receiver is still answering: PostgreSQL releases the row lock with the
    dead connection, and the next notifier delivers (same Idempotency-Key)."""
    tenant = await make_tenant()
    calls: list[str] = []
    killed = threading.Event()

    def slow_then_fast(request: Request) -> Response:
        calls.append(request.headers["Idempotency-Key"])
        if len(calls) == 1:
            killed.wait(60)  # no answer until the notifier waiting for it has been killed
        return Response("ok", status=200)

    receiver.expect_request("/hook", method="POST").respond_with_handler(slow_then_fast)
    await set_channels(alerts_settings, tenant, {"name": "hook", "type": "webhook",
                       "url": receiver.url_for("/hook"), "secret": WEBHOOK_SECRET})  # fmt: skip
    env = {
        **os.environ,
        "DATABASE_URL": alerts_settings.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": alerts_settings.bootstrap_servers,
        "WAYPOINT_LOG_JSON": "false",
        "WAYPOINT_ALERTS_NOTIFIER_POLL_SECONDS": "0.5",
        "WAYPOINT_EGRESS_ALLOW": "127.0.0.1",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "worker", "alerts", "notifier", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        alert_id = await open_alert(db, tenant.id)
        await eventually(lambda: _has(calls, 1), timeout=30)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        assert [r.status for r in await outbox(db, alert_id)] == ["pending"]
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        killed.set()
    async with running(notifier.run, alerts_settings):
        await eventually(lambda: _delivered(db, alert_id), timeout=30)
    assert len(calls) == 2
    assert calls[0] == calls[1]  # the receiver can drop the duplicate by its Idempotency-Key


async def test_slack_compatible_and_email_channels(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory, receiver: HTTPServer
):
    tenant = await make_tenant()
    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            received.append(envelope)
            return "250 OK"

    smtp = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        settings = alerts_settings.model_copy(update={"smtp_port": smtp.port})
        receiver.expect_request("/slack", method="POST").respond_with_data("ok")
        await set_channels(
            settings,
            tenant,
            {"name": "slack", "type": "slack", "url": receiver.url_for("/slack")},
            {"name": "mail", "type": "email", "recipients": ["csm@example.test"]},
        )
        alert_id = await open_alert(db, tenant.id)
        async with running(notifier.run, settings):
            await eventually(lambda: _has(received, 1))
            await eventually(lambda: _has(receiver.log, 1))
    finally:
        smtp.stop()
    slack = orjson.loads(receiver.log[0][0].get_data())
    assert "Churn risk" in slack["text"]
    assert alert_id in slack["blocks"][1]["elements"][0]["text"]
    mail = received[0]
    assert mail.rcpt_tos == ["csm@example.test"]
    body = mail.content.decode()
    assert "churn risk" in body
    assert "activity:" in body
    assert alert_id in body


async def test_channel_api_validates_and_never_echoes_secrets(
    alerts_settings: AlertsSettings, make_tenant: TenantFactory
):
    tenant = await make_tenant()
    async with app_client(create_app(alerts_settings)) as api:
        hook = {"name": "hook", "type": "webhook", "url": "https://cs.example.test/hook"}
        r = await api.put("/v1/notification-channels", json={"channels": [hook]},
                          headers=tenant.headers)  # fmt: skip
        assert r.status_code == 422
        assert "needs a secret" in r.json()["detail"]
        r = await api.put("/v1/notification-channels", headers=tenant.headers,
                          json={"channels": [{"name": "m", "type": "email"}]})  # fmt: skip
        assert r.status_code == 422
        assert "recipients" in str(r.json()["detail"])
        r = await api.put("/v1/notification-channels", headers=tenant.headers,
                          json={"channels": [{**hook, "secret": WEBHOOK_SECRET}]})  # fmt: skip
        assert r.status_code == 200
        assert WEBHOOK_SECRET not in r.text
        # round-tripping what GET returns keeps the stored secret
        got = (await api.get("/v1/notification-channels", headers=tenant.headers)).json()
        assert WEBHOOK_SECRET not in str(got)
        assert got["channels"][0]["has_secret"] is True
        again = [{k: c[k] for k in ("name", "type", "url", "recipients", "enabled")}
                 for c in got["channels"]]  # fmt: skip
        r = await api.put("/v1/notification-channels", json={"channels": again},
                          headers=tenant.headers)  # fmt: skip
        assert r.status_code == 200
        assert r.json()["channels"][0]["has_secret"] is True


async def _has(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _delivered(db: Database, alert_id: str) -> bool:
    return await _statuses(db, alert_id, ["delivered"])


async def _statuses(db: Database, alert_id: str, wanted: list[str]) -> bool:
    return [r.status for r in await outbox(db, alert_id)] == wanted


async def _retries(db: Database, alert_id: str, channel: str, n: int) -> bool:
    async with db.session() as session:
        refused = await session.scalar(
            text(
                "SELECT count(*) FROM alerts.delivery_log l "
                "JOIN alerts.notification_channel c ON c.id = l.channel_id "
                "WHERE l.alert_id = :a AND c.name = :c AND l.outcome = 'retry'"
            ),
            {"a": alert_id, "c": channel},
        )
    return (refused or 0) >= n
