"""Page sessions: bound to their key, expiring (absolute and idle), ended by sign-out or by
revoking the key; sign-in redirects only to our own pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.auth.service import KeyVerifier, revoke_key
from shared.web.auth import safe_next
from shared.web.sessions import close_session, load_session, open_session, token_hash

IDLE = timedelta(minutes=30)


async def test_a_session_carries_its_keys_current_scopes_and_expires(db, make_tenant):
    tenant = await make_tenant(scopes=["context:read"])
    principal = await KeyVerifier(db.sessionmaker, ttl=0).verify(tenant.key)
    now = datetime.now(UTC)
    async with db.session() as session:
        token, opened = await open_session(session, principal, lifetime=timedelta(hours=2), now=now)
    assert opened.csrf_token
    assert token not in opened.csrf_token
    async with db.session() as session:
        stored = (
            await session.execute(
                __import__("sqlalchemy").text(
                    "SELECT token_hash FROM auth.web_session WHERE tenant_id = :t"
                ),
                {"t": tenant.id},
            )
        ).scalar_one()
    assert stored == token_hash(token)
    assert stored != token

    async with db.session() as session:
        live = await load_session(session, token, idle=IDLE, now=now + timedelta(minutes=10))
        assert live is not None
        assert live.principal.tenant_id == tenant.id
        assert live.principal.scopes == frozenset({"context:read"})
        # idle too long (last seen 10 minutes in; 31 minutes later) → gone
        assert (
            await load_session(session, token, idle=IDLE, now=now + timedelta(minutes=41)) is None
        )
        # past its absolute lifetime → gone, however active
        assert await load_session(session, token, idle=IDLE, now=now + timedelta(hours=2)) is None
        assert await load_session(session, "not-a-token", idle=IDLE, now=now) is None
        assert await load_session(session, None, idle=IDLE, now=now) is None


async def test_revoking_the_key_or_signing_out_ends_the_session(db, make_tenant):
    tenant = await make_tenant(scopes=["admin"])
    principal = await KeyVerifier(db.sessionmaker, ttl=0).verify(tenant.key)
    async with db.session() as session:
        first, _ = await open_session(session, principal, lifetime=timedelta(hours=1))
        second, _ = await open_session(session, principal, lifetime=timedelta(hours=1))
    async with db.session() as session:
        await close_session(session, first)
    async with db.session() as session:
        assert await load_session(session, first, idle=IDLE) is None
        assert await load_session(session, second, idle=IDLE) is not None
        await revoke_key(session, tenant_id=tenant.id, key_id=uuid.UUID(principal.key_id))
    async with db.session() as session:
        assert await load_session(session, second, idle=IDLE) is None


def test_sign_in_returns_only_to_our_own_pages():
    home = "/app/agent"
    assert safe_next("/app/agent?identifier_type=phone&value=%2B1", home).startswith("/app/agent?")
    for hostile in ("https://evil.test/app/", "//evil.test/app/", "/app/\\evil", "/v1/alerts",
                    "/app/sign-in?next=/app/x", "", None):  # fmt: skip
        assert safe_next(hostile, home) == home, hostile
