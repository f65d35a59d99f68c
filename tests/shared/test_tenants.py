"""Tenants' own phone region: set at creation or later (CLI), carried by every API key."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import pytest
from sqlalchemy import text

from shared.auth.service import KeyVerifier
from shared.auth.tenants import create_tenant, list_tenants, set_phone_region, tenant_regions
from shared.config import CommonSettings
from shared.db import Database
from shared.errors import Conflict, NotFound, Unprocessable
from tests.support import TenantFactory


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def test_a_tenant_region_is_set_at_creation_changed_cleared_and_audited(db: Database):
    tenant = new_id()
    async with db.session() as session:
        created = await create_tenant(session, tenant, phone_region="ru", actor="test")
    assert created.phone_region == "RU"
    async with db.session() as session:
        assert (await tenant_regions(session))[tenant] == "RU"
        changed = await set_phone_region(session, tenant, "CN", actor="test")
    assert changed.phone_region == "CN"
    async with db.session() as session:
        cleared = await set_phone_region(session, tenant, "default", actor="test")
        listed = {t.id: t.phone_region for t in await list_tenants(session)}
        audit = (
            await session.execute(
                text(
                    "SELECT action, detail->>'phone_region' FROM auth.audit_log "
                    "WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant},
            )
        ).all()
    assert cleared.phone_region is None
    assert listed[tenant] is None
    assert [tuple(r) for r in audit] == [
        ("tenant.created", "RU"),
        ("tenant.phone_region_set", "CN"),
        ("tenant.phone_region_set", None),
    ]


async def test_bad_regions_ids_and_duplicates_are_refused(db: Database):
    tenant = new_id()
    async with db.session() as session:
        with pytest.raises(Unprocessable, match="unknown phone region"):
            await create_tenant(session, tenant, phone_region="Russia")
        with pytest.raises(Unprocessable, match="tenant id"):
            await create_tenant(session, "Not A Valid Id")
        await create_tenant(session, tenant)
    async with db.session() as session:
        with pytest.raises(Conflict, match="already exists"):
            await create_tenant(session, tenant, phone_region="RU")
    async with db.session() as session:
        with pytest.raises(NotFound):
            await set_phone_region(session, new_id(), "RU")
    async with db.session() as session:
        with pytest.raises(Unprocessable):
            await set_phone_region(session, tenant, "XX")


async def test_every_key_of_a_tenant_carries_its_region(db: Database, make_tenant: TenantFactory):
    own = await make_tenant(phone_region="CN")
    shared = await make_tenant()
    verifier = KeyVerifier(db.sessionmaker, ttl=0)
    assert (await verifier.verify(own.key)).region("US") == "CN"
    assert (await verifier.verify(shared.key)).region("US") == "US"
    async with db.session() as session:
        await set_phone_region(session, shared.id, "RU")
    assert (await verifier.verify(shared.key)).phone_region == "RU"


async def _cli(settings: CommonSettings, *args: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": settings.dsn, "WAYPOINT_PHONE_REGION": "US"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "tenants", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    assert process.returncode is not None
    return process.returncode, output


async def test_the_cli_creates_tenants_and_sets_their_region(
    db: Database, settings: CommonSettings
):
    tenant = new_id()
    code, out = await _cli(settings, "create", tenant, "--phone-region", "ru")
    assert (code, out.strip()) == (0, f"tenant '{tenant}' created; phone region: RU")
    code, out = await _cli(settings, "create", tenant)
    assert code == 1
    assert "already exists" in out
    code, out = await _cli(settings, "set-phone-region", tenant, "Narnia")
    assert code == 1
    assert "unknown phone region" in out
    code, out = await _cli(settings, "set-phone-region", tenant, "default")
    assert (code, out.strip()) == (0, f"tenant '{tenant}': phone region default (US)")
    code, out = await _cli(settings, "list")
    assert f"{tenant}\t{tenant}\tdefault (US)" in out.splitlines()
    async with db.session() as session:
        assert (await tenant_regions(session))[tenant] is None
