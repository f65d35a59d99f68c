"""Recompute a tenant's map: from its stored events (``waypoint rebuild-maps``), or from its
step log when the configuration that shapes journeys changes.

Each runs in one transaction holding the tenant's map lock exclusively, so compaction skips the
tenant meanwhile and readers see the old map until the new one commits. Events applied during a
rebuild stay queued unless the rebuild read them (their queue entries are deleted with the read),
so nothing is folded twice and nothing is lost.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import asyncpg

from services.journey.conformance import counts as conformance
from services.journey.maps import repository as repo
from services.journey.maps.maintain import Writes, recompute
from services.journey.maps.metrics import MAP_REBUILDS
from services.journey.maps.settings import MapConfig
from shared.db import Database, raw_connection


@dataclass
class Rebuilt:
    tenant: str
    customers: int = 0
    steps: int = 0
    events: int = 0
    seconds: float = 0.0


async def _active_after(
    conn: asyncpg.Connection, tenant: str, after: uuid.UUID, limit: int
) -> list[uuid.UUID]:
    rows = await conn.fetch(
        """SELECT id FROM journey.customer WHERE tenant_id = $1 AND status = 'active' AND id > $2
           ORDER BY id LIMIT $3""",
        tenant,
        after,
        limit,
    )
    return [r[0] for r in rows]


async def rebuild_from_events(
    conn: asyncpg.Connection, tenant: str, *, batch: int = 500
) -> Rebuilt:
    """Every active customer's steps, journeys and contribution from its (and its merged
    customers') events, with the same functions the compactor uses."""
    started = time.perf_counter()
    await repo.lock_tenant(conn, tenant)
    config = (await repo.configs(conn, [tenant]))[tenant]
    await repo.clear_tenant(conn, tenant, steps=True)
    await conformance.reset_tenant(conn, tenant, config)  # counts re-added by the writes below
    out = Rebuilt(tenant)
    after = uuid.UUID(int=0)
    while ids := await _active_after(conn, tenant, after, batch):
        keys = [(tenant, cid) for cid in ids]
        everything = await repo.member_facts(conn, keys)
        writes = Writes()
        read: list[str] = []
        for key in keys:
            facts = everything[key]
            change = recompute({}, None, facts, config=config, mode="fresh")
            writes.add(key, change)
            read += [f.event_id for f in facts]
            out.steps += change.steps
        await writes.flush(conn)
        await repo.done_events(conn, tenant, read)
        out.customers += len(ids)
        out.events += len(read)
        after = ids[-1]
    out.seconds = time.perf_counter() - started
    MAP_REBUILDS.labels("command").inc()
    return out


async def recompute_tenant(
    conn: asyncpg.Connection, tenant: str, config: MapConfig, *, batch: int = 1000
) -> Rebuilt:
    """Journeys and aggregates again from the stored step log (after a change of the episode
    window or the tenure bands); saves ``config`` in the same transaction."""
    started = time.perf_counter()
    await repo.lock_tenant(conn, tenant)
    await repo.save_config(conn, tenant, config)
    await repo.clear_tenant(conn, tenant, steps=False)
    await conformance.reset_tenant(conn, tenant, config)  # counts re-added by the writes below
    out = Rebuilt(tenant)
    after = uuid.UUID(int=0)
    while ids := await repo.mapped_after(conn, tenant, after, batch):
        keys = [(tenant, cid) for cid in ids]
        stored = await repo.steps_of(conn, keys)
        profiles = await repo.profiles_of(conn, keys)
        writes = Writes()
        for key in keys:
            # The aggregates were cleared: the stored steps count for nothing until re-added.
            change = recompute(
                stored[key], profiles.get(key), [], config=config, mode="fold", counted=False
            )
            writes.add(key, change)
            out.steps += change.steps
        await writes.flush(conn)
        out.customers += len(ids)
        after = ids[-1]
    out.seconds = time.perf_counter() - started
    MAP_REBUILDS.labels("config").inc()
    return out


async def rebuild_maps(db: Database, *, tenant: str | None = None) -> list[Rebuilt]:
    """``waypoint rebuild-maps``: one transaction per tenant (all tenants when None)."""
    async with db.session() as session:
        conn = await raw_connection(session)
        tenants = (
            [tenant]
            if tenant
            else [r[0] for r in await conn.fetch("SELECT DISTINCT tenant_id FROM journey.customer")]
        )
    done = []
    for name in sorted(tenants):
        async with db.session() as session:
            done.append(await rebuild_from_events(await raw_connection(session), name))
    return done
