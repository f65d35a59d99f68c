"""Rebuild context documents from the stored events (after a change to the reducer's rules)."""

from __future__ import annotations

import uuid

from services.journey import repository as repo
from services.journey.config import JourneySettings
from services.journey.identity.merges import rebuild_context
from shared.db import Database, raw_connection


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
            ids = [
                r[0]
                for r in await conn.fetch(
                    """SELECT id FROM journey.customer
                       WHERE tenant_id = $1 AND status = 'active' AND id > $2
                         AND ($3::uuid IS NULL OR id = $3)
                       ORDER BY id LIMIT $4""",
                    tenant,
                    after,
                    customer_id,
                    batch,
                )
            ]
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
