"""The egress guard on alert destinations: the SSRF probes of issue 12 are refused when a channel
is configured and again at delivery (after DNS resolution, connecting to the checked address),
unless the operator's allow-list names them; deliveries keep the status, never the body; secret
URLs and signing secrets are shown only as hints."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import text
from werkzeug import Request, Response

from services.alerts import notifier
from services.alerts.app import create_app
from services.alerts.config import AlertsSettings
from shared.db import Database
from shared.egress import EgressPolicy, address_kind, check_url, guarded_client, refused
from tests.alerts.conftest import WEBHOOK_SECRET, running
from tests.alerts.test_notifier import open_alert
from tests.support import TenantFactory, app_client, eventually

# The probes of issue 12, and the other ways to write an internal address.
SSRF_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://127.0.0.1:8001/metrics",
    "http://localhost:5432/",
    "http://[::1]/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1:9092/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://0.0.0.0:8002/",
    "http://224.0.0.1/",
    "http://[2002:7f00:1::]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://metadata.localhost/",
]


def _settings(alerts_settings: AlertsSettings, allow: str = "") -> AlertsSettings:
    return alerts_settings.model_copy(update={"egress_allow": allow})


@pytest.mark.parametrize("kind", ["webhook", "slack"])
async def test_ssrf_destinations_are_refused_when_configured(
    alerts_settings: AlertsSettings, make_tenant: TenantFactory, kind: str
):
    tenant = await make_tenant()
    async with app_client(create_app(_settings(alerts_settings))) as api:
        for url in SSRF_URLS:
            channel = {"name": "c", "type": kind, "url": url, "secret": WEBHOOK_SECRET}
            if kind == "slack":
                channel.pop("secret")
            r = await api.put("/v1/notification-channels", json={"channels": [channel]},
                              headers=tenant.headers)  # fmt: skip
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"] == "validation_error"
            assert "destinations must be public" in r.json()["detail"], (url, r.text)
        got = await api.get("/v1/notification-channels", headers=tenant.headers)
        assert got.json()["channels"] == []


async def test_the_allow_list_admits_what_it_names_and_nothing_else(
    alerts_settings: AlertsSettings, make_tenant: TenantFactory
):
    tenant = await make_tenant()
    settings = _settings(alerts_settings, "127.0.0.1:9999, 10.1.0.0/16, hooks.internal")
    cases = {
        "http://127.0.0.1:9999/ok": 200,
        "http://127.0.0.1:9998/other-port": 422,
        "http://10.1.2.3/in-the-cidr": 200,
        "http://10.2.0.1/outside": 422,
        "http://hooks.internal/by-name": 200,
        "http://169.254.169.254/": 422,
    }
    async with app_client(create_app(settings)) as api:
        for url, status in cases.items():
            hook = {"name": "h", "type": "webhook", "url": url, "secret": WEBHOOK_SECRET}
            r = await api.put("/v1/notification-channels", json={"channels": [hook]},
                              headers=tenant.headers)  # fmt: skip
            assert r.status_code == status, (url, r.text)


async def _insert_channel(db: Database, tenant: str, *, kind: str, url: str) -> None:
    """A channel stored as if its name had resolved to a public address when configured."""
    async with db.session() as session:
        await session.execute(
            text(
                "INSERT INTO alerts.notification_channel (id, tenant_id, name, type, url, secret, "
                "recipients, enabled) VALUES (:id, :t, :n, :k, :u, :s, '[]'::jsonb, true)"
            ),
            {"id": uuid.uuid4(), "t": tenant, "n": kind, "k": kind, "u": url, "s": WEBHOOK_SECRET},
        )


async def _log(db: Database, alert_id: str) -> list[Any]:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "SELECT l.outcome, l.status_code, l.error, o.status, o.attempts, o.last_error "
                "FROM alerts.delivery_log l JOIN alerts.outbox o ON o.id = l.outbox_id "
                "WHERE l.alert_id = :a ORDER BY l.attempt"
            ),
            {"a": alert_id},
        )
        return rows.all()


async def test_a_destination_that_resolves_inward_is_refused_at_delivery(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory, receiver: HTTPServer
):
    """localhost resolves to 127.0.0.1 when the notifier connects: refused, not retried, and the
    receiver listening there gets nothing. With the allow-list naming it, it is delivered."""
    hits: list[Request] = []
    receiver.expect_request("/hook").respond_with_handler(lambda r: hits.append(r) or Response())
    tenant = await make_tenant()
    await _insert_channel(
        db, tenant.id, kind="webhook", url=f"http://localhost:{receiver.port}/hook"
    )
    alert_id = await open_alert(db, tenant.id)
    async with running(notifier.run, _settings(alerts_settings)):
        rows = await eventually(lambda: _log(db, alert_id))
    assert rows[0].outcome == "failed"
    assert rows[0].status == "failed"
    assert rows[0].attempts == 1  # a refused destination is not retried
    assert "loopback" in rows[0].error
    assert rows[0].error.startswith("refused")
    assert hits == []

    tenant = await make_tenant()
    await _insert_channel(
        db, tenant.id, kind="webhook", url=f"http://localhost:{receiver.port}/hook"
    )
    alert_id = await open_alert(db, tenant.id)
    allowed = _settings(alerts_settings, f"localhost:{receiver.port}")
    async with running(notifier.run, allowed):
        rows = await eventually(lambda: _log(db, alert_id))
    assert [r.outcome for r in rows] == ["delivered"]
    assert len(hits) == 1


async def test_dns_rebinding_connects_only_to_the_checked_address(receiver: HTTPServer):
    """The name is resolved once per connection and the connection made to that address: a
    resolver that answers a private address is refused; an allowed answer is used as is, with
    the name kept in the Host header."""
    seen: list[str] = []
    receiver.expect_request("/hook").respond_with_handler(
        lambda r: seen.append(r.headers["Host"]) or Response("ok")
    )
    answers = iter([["127.0.0.1"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    url = f"http://hooks.example.test:{receiver.port}/hook"
    async with guarded_client(EgressPolicy.parse(""), timeout=5, resolve=rebinding) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.post(url, content=b"{}")
        assert "hooks.example.test (127.0.0.1) is a loopback address" in str(refused(caught.value))
    assert seen == []
    policy = EgressPolicy.parse("127.0.0.1")
    async with guarded_client(policy, timeout=5, resolve=rebinding) as client:
        r = await client.post(url, content=b"{}")
    assert r.status_code == 200
    assert seen == [f"hooks.example.test:{receiver.port}"]


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_to_the_checked_address_still_verifies_the_name(tmp_path: Path):
    """Connecting to the resolved address keeps SNI and certificate checks on the name: the
    certificate for hooks.example.test is accepted, and the same server under another name
    fails verification."""
    cert, key = _self_signed(tmp_path, "hooks.example.test")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=server_context)
    server.expect_request("/hook").respond_with_data("ok")
    server.start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))

        async def local(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        policy = EgressPolicy.parse("127.0.0.1")
        async with guarded_client(policy, timeout=5, resolve=local, verify=trust) as client:
            r = await client.post(f"https://hooks.example.test:{server.port}/hook")
            assert r.status_code == 200
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|mismatch"):
                await client.post(f"https://other.example.test:{server.port}/hook")
    finally:
        server.stop()


async def test_deliveries_store_the_status_never_the_response_body(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory, receiver: HTTPServer
):
    leak = f"internal-secret-{uuid.uuid4().hex}"
    receiver.expect_request("/hook").respond_with_data(leak * 50, status=400)
    tenant = await make_tenant()
    async with app_client(create_app(alerts_settings)) as api:
        hook = {"name": "h", "type": "webhook", "url": receiver.url_for("/hook"),
                "secret": WEBHOOK_SECRET}  # fmt: skip
        r = await api.put("/v1/notification-channels", json={"channels": [hook]},
                          headers=tenant.headers)  # fmt: skip
        assert r.status_code == 200, r.text
    alert_id = await open_alert(db, tenant.id)
    async with running(notifier.run, alerts_settings):
        rows = await eventually(lambda: _log(db, alert_id))
    assert rows[0].status_code == 400
    assert rows[0].error == "HTTP 400"
    assert all(leak not in str(v) for row in rows for v in row)


async def test_secret_urls_and_signing_secrets_are_only_hinted(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    token = f"T000/B000/{uuid.uuid4().hex}"
    slack_url = f"https://hooks.slack.com/services/{token}"
    tenant = await make_tenant(scopes=["alerts:read", "alerts:write"])
    reader = await make_tenant.key(tenant, scopes=["alerts:read"])
    channels = [
        {"name": "slack", "type": "slack", "url": slack_url},
        {"name": "hook", "type": "webhook", "url": "https://cs.example.test/hook",
         "secret": WEBHOOK_SECRET},
        {"name": "tokened", "type": "webhook", "url": "https://cs.example.test/h?token=abc123xyz",
         "secret": WEBHOOK_SECRET},
    ]  # fmt: skip
    async with app_client(create_app(alerts_settings)) as api:
        r = await api.put("/v1/notification-channels", json={"channels": channels},
                          headers=tenant.headers)  # fmt: skip
        assert r.status_code == 200, r.text
        got = await api.get("/v1/notification-channels", headers={"X-API-Key": reader})
        assert got.status_code == 200
        for secret in (token, "abc123xyz", WEBHOOK_SECRET):
            assert secret not in r.text
            assert secret not in got.text
        by_name = {c["name"]: c for c in got.json()["channels"]}
        assert by_name["slack"]["url"] is None
        assert by_name["slack"]["url_hint"] == f"https://hooks.slack.com/…{token[-4:]}"
        assert by_name["tokened"]["url"] is None
        assert by_name["hook"]["url"] == "https://cs.example.test/hook"
        assert by_name["hook"]["secret_hint"] == f"…{WEBHOOK_SECRET[-4:]}"
        # sending back what GET shows (no url for the secret ones) keeps the stored URLs
        again = [
            {k: c[k] for k in ("name", "type", "recipients", "enabled")}
            | ({"url": c["url"]} if c["url"] else {})
            for c in got.json()["channels"]
        ]
        r = await api.put("/v1/notification-channels", json={"channels": again},
                          headers=tenant.headers)  # fmt: skip
        assert r.status_code == 200, r.text
    async with db.session() as session:
        stored = dict(
            (
                await session.execute(
                    text(
                        "SELECT name, url FROM alerts.notification_channel "
                        "WHERE tenant_id = :t AND deleted_at IS NULL"
                    ),
                    {"t": tenant.id},
                )
            ).all()
        )
    assert stored["slack"] == slack_url
    assert stored["tokened"] == "https://cs.example.test/h?token=abc123xyz"


async def test_email_recipients_cannot_point_the_relay_inward(
    alerts_settings: AlertsSettings, make_tenant: TenantFactory
):
    tenant = await make_tenant()
    async with app_client(create_app(alerts_settings)) as api:
        for bad in ["ops@[127.0.0.1]", "ops@127.0.0.1", "root@localhost", "a@mail.internal"]:
            channel = {"name": "m", "type": "email", "recipients": [bad]}
            r = await api.put("/v1/notification-channels", json={"channels": [channel]},
                              headers=tenant.headers)  # fmt: skip
            assert r.status_code == 422, (bad, r.text)
        channel = {"name": "m", "type": "email", "recipients": ["cs@example.com"]}
        r = await api.put("/v1/notification-channels", json={"channels": [channel]},
                          headers=tenant.headers)  # fmt: skip
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::ffff:10.0.0.1", "private address (10.0.0.1 inside IPv6)"),
        ("2002:a9fe:a9fe::", "cloud metadata address (169.254.169.254 inside IPv6)"),
        ("64:ff9b::7f00:1", "loopback address (127.0.0.1 inside IPv6)"),
        ("100.64.1.1", "non-public address"),
        ("fe80::1", "link-local address"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_kinds(address: str, kind: str | None):
    import ipaddress

    assert address_kind(ipaddress.ip_address(address)) == kind


async def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_at_delivery():
    async def nothing(host: str, port: int) -> list[str]:
        raise OSError("no such name")

    policy = EgressPolicy.parse("")
    assert await check_url("https://not-yet.example.test/h", policy, resolve=nothing) is None

    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["127.0.0.1"]

    assert await check_url("https://slow.example.test/h", policy, resolve=slow, timeout=0.1) is None
