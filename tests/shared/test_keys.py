"""API keys after creation: expiry (a clear 401 from then on, to the second, cache or not),
rotation (old and new key both valid during the grace period), ``last_used_at`` written at most
once a minute, and the ``context:write`` scope for writes to the context."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from sqlalchemy import text

from services.alerts.app import create_app as alerts_app
from services.alerts.config import AlertsSettings
from services.journey.app import create_app as journey_app
from services.journey.config import JourneySettings
from shared.auth.keys import parse_duration, rotate_key, set_expiry
from shared.auth.service import create_key
from shared.config import CommonSettings
from shared.db import Database
from tests.support import TenantFactory, app_client

READ = "/v1/engagement-model"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _cached(overrides: dict[str, Any]) -> AlertsSettings:
    return AlertsSettings(**{**overrides, "api_key_cache_seconds": 600.0})


async def _key_row(db: Database, key_id: Any) -> Any:
    async with db.session() as session:
        return (
            await session.execute(
                text(
                    "SELECT expires_at, last_used_at, rotated_from FROM auth.api_key WHERE id = :i"
                ),
                {"i": key_id},
            )
        ).one()


async def test_an_expired_key_is_refused_with_a_clear_401_even_from_the_cache(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read"])
    expires = datetime.now(UTC) + timedelta(hours=1)
    async with db.session() as session:
        key, row = await create_key(
            session, tenant_id=tenant.id, name="t", scopes=["alerts:read"], expires_at=expires
        )
    async with app_client(alerts_app(_cached(settings_overrides))) as api:
        assert (await api.get(READ, headers=_bearer(key))).status_code == 200
        with time_machine.travel(expires + timedelta(seconds=1), tick=True):
            r = await api.get(READ, headers=_bearer(key))
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        assert f"expired at {expires.isoformat(timespec='seconds')}" in r.json()["detail"]
        assert "successor" in r.json()["detail"]
        # an expiry set later reaches the cache within the cache time; fresh processes at once
        async with db.session() as session:
            await set_expiry(session, row.id, None, actor="test")
        assert (await api.get(READ, headers=_bearer(key))).status_code == 200


async def test_rotation_keeps_both_keys_valid_for_the_grace_period_then_only_the_new_one(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read"])
    now = datetime.now(UTC)
    async with db.session() as session:
        old_key, old_row = await create_key(
            session, tenant_id=tenant.id, name="crm", scopes=["alerts:read"]
        )
        new_key, new, old = await rotate_key(
            session, old_row.id, grace=timedelta(hours=2), actor="test", now=now
        )
    assert old.expires_at == now + timedelta(hours=2)
    assert new.rotated_from == old_row.id
    assert new.name == "crm"
    assert new.scopes == ["alerts:read"]
    assert new.expires_at is None
    async with app_client(alerts_app(_cached(settings_overrides))) as api:
        for key in (old_key, new_key):
            assert (await api.get(READ, headers=_bearer(key))).status_code == 200
        with time_machine.travel(now + timedelta(hours=2, seconds=1), tick=True):
            assert (await api.get(READ, headers=_bearer(old_key))).status_code == 401
            assert (await api.get(READ, headers=_bearer(new_key))).status_code == 200
    async with db.session() as session:
        audited = (
            await session.execute(
                text(
                    "SELECT detail FROM auth.audit_log WHERE action = 'api_key.rotated' "
                    "AND target = :k"
                ),
                {"k": str(old_row.id)},
            )
        ).scalar_one()
    assert audited["successor"] == str(new.id)
    assert new_key not in str(audited)


async def _cli(settings: CommonSettings, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": settings.dsn}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "keys", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_rotates_and_expires_keys(
    settings: CommonSettings, settings_overrides, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read"])
    async with db.session() as session:
        old_key, row = await create_key(
            session, tenant_id=tenant.id, name="cti", scopes=["alerts:read"]
        )
    code, out, err = await _cli(settings, "rotate", str(row.id), "--grace", "30m")
    assert code == 0, err
    new_key = out.strip()
    assert new_key.startswith("wp_")
    assert new_key != old_key
    assert f"old key {row.id} works until" in err
    async with app_client(alerts_app(_cached(settings_overrides))) as api:
        for key in (old_key, new_key):
            assert (await api.get(READ, headers=_bearer(key))).status_code == 200
    code, out, err = await _cli(settings, "expire", str(row.id), "--in", "0")
    assert code == 0, err
    async with app_client(alerts_app(_cached(settings_overrides))) as api:
        r = await api.get(READ, headers=_bearer(old_key))
        assert r.status_code == 401
        assert "expired" in r.json()["detail"]
        assert (await api.get(READ, headers=_bearer(new_key))).status_code == 200
    async with db.session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT id, expires_at <= now() AS expired, rotated_from FROM auth.api_key "
                    "WHERE tenant_id = :t"
                ),
                {"t": tenant.id},
            )
        ).all()
    expired = {str(r.id) for r in rows if r.expired}
    assert expired == {str(row.id)}
    assert [r.rotated_from for r in rows if r.rotated_from] == [row.id]
    code, out, err = await _cli(settings, "rotate", str(uuid.uuid4()))
    assert code == 1
    assert "no API key" in err


async def test_last_used_at_is_written_at_most_once_a_minute_not_per_request(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read"])
    async with db.session() as session:
        key, row = await create_key(session, tenant_id=tenant.id, name="t", scopes=["alerts:read"])
    assert (await _key_row(db, row.id)).last_used_at is None
    app = alerts_app(_cached(settings_overrides))
    async with app_client(app) as api:
        verifier = app.state.key_verifier
        assert (await api.get(READ, headers=_bearer(key))).status_code == 200
        first = (await _key_row(db, row.id)).last_used_at  # written with the look-up
        assert first is not None
        for _ in range(50):  # answered from the cache: nothing written, nothing queued
            assert (await api.get(READ, headers=_bearer(key))).status_code == 200
        assert await verifier.save_last_used() == 0
        assert (await _key_row(db, row.id)).last_used_at == first
        # a minute later, a use answered from the cache is saved by the background task
        with time_machine.travel(datetime.now(UTC) + timedelta(seconds=61), tick=True):
            assert (await api.get(READ, headers=_bearer(key))).status_code == 200
        assert await verifier.save_last_used() == 1


async def test_context_writes_need_context_write(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    reader = await make_tenant(scopes=["context:read"])
    writer = await make_tenant(scopes=["context:read", "context:write"])
    fact = {"name": "language", "value": "fr"}
    missing = uuid.uuid4()
    async with app_client(journey_app(JourneySettings(**settings_overrides))) as api:
        r = await api.post(f"/v1/customers/{missing}/facts", json=fact, headers=reader.headers)
        assert r.status_code == 403
        assert "context:write" in r.json()["detail"]
        r = await api.get(f"/v1/customers/{missing}/context", headers=reader.headers)
        assert r.status_code == 404  # reads still need only context:read
        r = await api.post(f"/v1/customers/{missing}/facts", json=fact, headers=writer.headers)
        assert r.status_code == 404  # past the scope check: no such customer


def test_durations():
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("0") == timedelta(0)
