import asyncio

import pytest
from sqlalchemy import text

from shared.auth.service import KeyVerifier, hash_key
from shared.db import Database
from shared.errors import Forbidden, Unauthorized
from tests.support import TenantFactory


async def test_keys_are_stored_hashed_and_bound_to_their_tenant(
    db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["events:write"])
    async with db.session() as session:
        rows = (
            await session.execute(
                text("SELECT key_hash, tenant_id FROM auth.api_key WHERE tenant_id = :t"),
                {"t": tenant.id},
            )
        ).all()
    assert [r.tenant_id for r in rows] == [tenant.id]
    assert rows[0].key_hash == hash_key(tenant.key)
    assert tenant.key not in rows[0].key_hash

    principal = await KeyVerifier(db.sessionmaker, ttl=0).verify(tenant.key)
    assert principal.tenant_id == tenant.id
    principal.require("events:write")
    with pytest.raises(Forbidden, match="events:read"):
        principal.require("events:read")


async def test_unknown_and_revoked_keys_are_refused(db: Database, make_tenant: TenantFactory):
    tenant = await make_tenant()
    verifier = KeyVerifier(db.sessionmaker, ttl=0)
    with pytest.raises(Unauthorized):
        await verifier.verify("wp_not-a-real-key")
    with pytest.raises(Unauthorized):
        await verifier.verify(None)
    async with db.session() as session:
        await session.execute(
            text("UPDATE auth.api_key SET revoked_at = now() WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
    with pytest.raises(Unauthorized, match="revoked"):
        await verifier.verify(tenant.key)


async def test_a_revoked_key_is_refused_once_its_cached_answer_is_older_than_the_ttl(
    db: Database, make_tenant: TenantFactory
):
    """The documented bound (docs/security.md, ``WAYPOINT_API_KEY_CACHE_SECONDS``): a process
    that verified a key keeps answering from memory for at most ``ttl`` seconds after a
    revocation, and refuses it from then on, with no other signal."""
    import uuid

    from shared.auth.service import revoke_key

    tenant = await make_tenant()
    clock = [1000.0]
    verifier = KeyVerifier(db.sessionmaker, ttl=30.0, clock=lambda: clock[0])
    principal = await verifier.verify(tenant.key)
    assert verifier.lookups == 1
    async with db.session() as session:
        assert await revoke_key(session, key_id=uuid.UUID(principal.key_id))
    clock[0] += 29.9
    assert await verifier.verify(tenant.key) == principal  # the cached answer, within the bound
    assert verifier.lookups == 1
    clock[0] += 0.1  # ttl seconds after the look-up
    with pytest.raises(Unauthorized, match="revoked"):
        await verifier.verify(tenant.key)
    assert verifier.lookups == 2
    with pytest.raises(Unauthorized, match="revoked"):  # and it stays refused
        await verifier.verify(tenant.key)


async def test_admin_scope_holds_every_scope(make_tenant: TenantFactory, db: Database):
    tenant = await make_tenant(scopes=["admin"])
    principal = await KeyVerifier(db.sessionmaker, ttl=0).verify(tenant.key)
    principal.require("alerts:write")
    principal.require("context:read")


async def test_concurrent_requests_with_a_stale_key_share_one_look_up(
    db: Database, make_tenant: TenantFactory
):
    """When a key's cached answer goes stale under load, the requests that arrive while it is
    read again wait for that one look-up (they used to queue for the pool, one read each)."""
    tenant = await make_tenant()
    clock = [1000.0]
    verifier = KeyVerifier(db.sessionmaker, ttl=30.0, clock=lambda: clock[0])
    principal = await verifier.verify(tenant.key)
    assert verifier.lookups == 1
    clock[0] += 30.0  # stale: the next request reads the key again
    answers = await asyncio.gather(*(verifier.verify(tenant.key) for _ in range(20)))
    assert answers == [principal] * 20
    assert verifier.lookups == 2
    # Concurrent requests with a key never seen valid share one look-up too, and are refused.
    results = await asyncio.gather(
        *(verifier.verify("wp_unknown_key_0123456789") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, Unauthorized) for r in results)
    assert verifier.lookups == 3
