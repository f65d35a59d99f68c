"""Tombstones of erased identifiers: a salted hash (HMAC under the tenant's data key) per
identifier, so a later, replayed or redriven event of an erased customer is dropped without
the store keeping the identifier itself. Each service keeps its own table (its schema)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.events import Envelope
from shared.privacy.crypto import Keyring

TABLES = {"ingest": "ingest.erased_identifier", "journey": "journey.erased_identifier"}


async def erased(
    conn: asyncpg.Connection, keyring: Keyring, service: str, envelopes: Sequence[Envelope]
) -> set[int]:
    """Indexes of ``envelopes`` that carry an erased identifier (one query per batch)."""
    if not envelopes:
        return set()
    await keyring.ensure(conn, {e.tenant for e in envelopes})
    # A tenant without a data key (not a tenant any more) cannot have tombstones.
    hashes: list[list[str]] = [
        [keyring.identifier_hash(e.tenant, i.key) for i in e.identifiers]
        if keyring.has(e.tenant)
        else []
        for e in envelopes
    ]
    tenants = [e.tenant for e, hs in zip(envelopes, hashes, strict=True) for _ in hs]
    flat = [h for hs in hashes for h in hs]
    rows = await conn.fetch(
        f"SELECT tenant_id, identifier_hash FROM {TABLES[service]} t "
        "JOIN unnest($1::text[], $2::text[]) AS u(tenant, hash) "
        "ON t.tenant_id = u.tenant AND t.identifier_hash = u.hash",
        tenants,
        flat,
    )
    if not rows:
        return set()
    gone = {(r["tenant_id"], r["identifier_hash"]) for r in rows}
    return {
        index
        for index, (envelope, hs) in enumerate(zip(envelopes, hashes, strict=True))
        if any((envelope.tenant, h) in gone for h in hs)
    }


async def bury(
    conn: asyncpg.Connection, service: str, tenant: str, erasure_id: str, hashes: Sequence[str]
) -> None:
    await conn.execute(
        f"INSERT INTO {TABLES[service]} (tenant_id, identifier_hash, erasure_id) "
        "SELECT $1, h, $2::uuid FROM unnest($3::text[]) AS h ON CONFLICT DO NOTHING",
        tenant,
        erasure_id,
        list(hashes),
    )
