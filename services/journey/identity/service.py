"""Identity services: the identity graph of a customer, and merge and split by hand (admin,
audited; the customer activity goes to the outbox in the caller's transaction)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.config import JourneySettings
from services.journey.context import rules as ctx
from services.journey.context.service import find_by_id
from services.journey.identity import merges
from services.journey.identity import repository as repo
from services.journey.identity.rules import Rule
from services.journey.outbox import enqueue_activity
from shared.auth.service import Principal, audit
from shared.db import raw_connection
from shared.errors import Conflict, NotFound
from shared.events.activity import CustomerActivity


async def identity_graph(pool: asyncpg.Pool, tenant: str, customer_id: uuid.UUID) -> dict[str, Any]:
    """Identifiers with provenance, merges (with rule and event), splits, provisional links."""
    found = await find_by_id(pool, tenant, customer_id, kind="identities")
    cid = found.customer_id
    async with pool.acquire() as conn:
        identifiers = await repo.identities(conn, tenant, await repo.member_ids(conn, tenant, cid))
        merged = await repo.merges_of(conn, tenant, cid)
        splits = await repo.splits_of(conn, tenant, cid)
        provisional = await repo.provisional_links_of(conn, tenant, cid)
    return {
        "customer_id": str(cid),
        "identifiers": identifiers,
        "merges": [_jsonable(r) for r in merged],
        "splits": [_jsonable(r) for r in splits],
        "provisional_links": [_jsonable(r) for r in provisional],
    }


def _jsonable(row: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in dict(row).items():
        out[k] = (
            v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
        )
    return out


async def _active(conn: Any, tenant: str, customer_id: uuid.UUID) -> uuid.UUID:
    cid = await repo.active_id(conn, tenant, customer_id)
    if cid is None:
        raise NotFound(f"customer {customer_id} not found")
    return cid


async def manual_merge(
    session: AsyncSession,
    *,
    settings: JourneySettings,
    principal: Principal,
    survivor_id: uuid.UUID,
    merged_id: uuid.UUID,
    reason: str | None,
) -> merges.MergeResult:
    tenant = principal.tenant_id
    conn = await raw_connection(session)
    survivor = await _active(conn, tenant, survivor_id)
    merged = await _active(conn, tenant, merged_id)
    if survivor == merged:
        raise Conflict(f"customers {survivor_id} and {merged_id} are already one customer")
    result = await merges.merge(
        conn,
        tenant=tenant,
        survivor_id=survivor,
        merged_id=merged,
        rule=Rule.manual.value,
        actor=f"key:{principal.key_id}",
        reason=reason,
        channel=settings.notify_channel,
    )
    await audit(
        session,
        tenant_id=tenant,
        actor=f"key:{principal.key_id}",
        action="customer.merged",
        target=str(survivor),
        detail={"merged_id": str(merged), "merge_id": result.merge_id, "reason": reason},
    )
    await enqueue_activity(
        conn,
        settings,
        CustomerActivity(
            kind="merged",
            tenant=tenant,
            customer_id=str(survivor),
            occurred_at=datetime.now(UTC),
            traits=ctx.trait_snapshot(result.doc),
            merged_ids=[str(merged)],
        ),
    )
    return result


async def split_customer(
    session: AsyncSession,
    *,
    settings: JourneySettings,
    principal: Principal,
    customer_id: uuid.UUID,
    merge_id: int | None,
    reason: str | None,
) -> merges.SplitResult:
    tenant = principal.tenant_id
    conn = await raw_connection(session)
    row = await repo.customer_row(conn, tenant, customer_id)
    if row is None:
        raise NotFound(f"customer {customer_id} not found")
    if row["status"] != "active":
        raise Conflict(
            f"customer {customer_id} is merged into {row['merged_into']}; split that customer"
        )
    result = await merges.split(
        conn,
        tenant=tenant,
        customer_id=customer_id,
        actor=f"key:{principal.key_id}",
        merge_id=merge_id,
        reason=reason,
        channel=settings.notify_channel,
    )
    await audit(
        session,
        tenant_id=tenant,
        actor=f"key:{principal.key_id}",
        action="customer.split",
        target=str(customer_id),
        detail={
            "merge_id": result.merge_id,
            "restored_id": str(result.restored_id),
            "moved_events": len(result.moved_events),
            "reason": reason,
        },
    )
    await enqueue_activity(
        conn,
        settings,
        CustomerActivity(
            kind="split",
            tenant=tenant,
            customer_id=str(customer_id),
            occurred_at=datetime.now(UTC),
            traits=ctx.trait_snapshot(result.docs[customer_id][0]),
            split_ids=[str(customer_id), str(result.restored_id)],
        ),
    )
    return result
