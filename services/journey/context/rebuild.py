"""Rebuild context documents from the stored events: one customer's after a merge or split, and
every customer's after a change to the reducer's rules (``waypoint rebuild-contexts``)."""

from __future__ import annotations

import uuid

import asyncpg
import orjson

from services.journey.config import JourneySettings
from services.journey.context import repository as repo
from services.journey.context import rules as ctx
from services.journey.identity import repository as identity_repo
from shared.db import Database, raw_connection


async def rebuild_context(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID, version: int
) -> ctx.Doc:
    """Re-fold a customer's document from its own and its merged customers' events and
    identifiers, and save it as ``version``. Its engagement, which alerts publishes and no event
    holds, is kept."""
    members = await identity_repo.member_ids(conn, tenant, customer_id)
    engagement = await repo.engagement_of(conn, tenant, customer_id)
    doc = ctx.rebuild(await repo.events_of(conn, tenant, members), engagement=engagement)
    for link in await identity_repo.identities(conn, tenant, members):
        key = f"{link['type']}:{link['value']}"
        ctx.merge_identity(doc, key, {k: v for k, v in link.items() if k != "linked_customer_id"})
    await repo.save_contexts(conn, [(tenant, customer_id, orjson.dumps(doc), version)])
    return doc


async def rebuild_contexts(
    db: Database,
    settings: JourneySettings,
    *,
    tenant: str,
    customer_id: uuid.UUID | None = None,
    batch: int = 200,
) -> int:
    """Re-fold every active customer of ``tenant`` (or one), ``batch`` per transaction."""
    done, after = 0, uuid.UUID(int=0)
    while True:
        async with db.session() as session:
            conn = await raw_connection(session)
            ids = await identity_repo.active_ids(
                conn, tenant, after=after, only=customer_id, limit=batch
            )
            if not ids:
                return done
            locked = await repo.lock_contexts(conn, [(tenant, cid) for cid in ids])
            notices = []
            for cid in ids:
                version = locked.get((tenant, cid), ({}, 0))[1] + 1
                await rebuild_context(conn, tenant, cid, version)
                notices.append(f"{tenant}|{cid}|{version}")
            await repo.notify(conn, settings.notify_channel, notices)
        done += len(ids)
        after = ids[-1]
