"""Merge and split customers (worker rules and the admin endpoints share these).

A merge never rewrites history: events and identifier rows keep the customer they were applied
to, the merged customer points at the survivor (``merged_into``), and the survivor's context is
rebuilt from all their events. A split flips that back, moves the events applied to the
survivor since the merge that belong to the restored side, and rebuilds both contexts.
Runs inside the caller's transaction; never commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from services.journey.context import repository as context_repo
from services.journey.context import rules as ctx
from services.journey.context.rebuild import rebuild_context
from services.journey.identity import repository as repo
from services.journey.identity.rules import EventSide, split_attribution
from services.journey.maps import repository as maps_repo
from services.journey.metrics import MERGES, SPLITS
from shared.errors import Conflict, NotFound

# The split boundary of a merge: the tenant's last applied event. ``split`` takes the survivor's
# events with a higher ``seq`` as applied after the merge. ``seq`` comes from one identity
# sequence, so every later event (of any tenant) gets a higher one: the tenant's maximum marks
# "now" as well as the global one would, and ix_event_tenant_id_seq answers it from one index
# entry (a backward index-only scan) instead of reading every tenant's events.
LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM journey.event WHERE tenant_id = $1"


@dataclass
class MergeResult:
    merge_id: int
    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    doc: ctx.Doc
    version: int


@dataclass
class SplitResult:
    merge_id: int
    customer_id: uuid.UUID
    restored_id: uuid.UUID
    moved_events: list[str] = field(default_factory=list)
    moved_identifiers: int = 0
    docs: dict[uuid.UUID, tuple[ctx.Doc, int]] = field(default_factory=dict)


async def _recompute_strength(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> None:
    await conn.execute(
        """UPDATE journey.customer SET updated_at = now(), strength = coalesce((
               SELECT max(i.strength) FROM journey.identifier i
               JOIN journey.customer m ON m.tenant_id = i.tenant_id AND m.id = i.customer_id
               WHERE i.tenant_id = $1 AND (m.id = $2 OR m.merged_into = $2)), 0)
           WHERE tenant_id = $1 AND id = $2""",
        tenant,
        customer_id,
    )


async def merge(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    survivor_id: uuid.UUID,
    merged_id: uuid.UUID,
    rule: str,
    actor: str,
    via: str | None = None,
    event_id: str | None = None,
    reason: str | None = None,
    channel: str,
) -> MergeResult:
    """Fold ``merged_id`` into ``survivor_id`` (both active customers of ``tenant``)."""
    if survivor_id == merged_id:
        raise Conflict("a customer cannot be merged into itself")
    locked = await context_repo.lock_contexts(conn, [(tenant, survivor_id), (tenant, merged_id)])
    rows = await conn.fetch(
        """SELECT id, status, strength FROM journey.customer
           WHERE tenant_id = $1 AND id = ANY($2::uuid[]) FOR UPDATE""",
        tenant,
        [survivor_id, merged_id],
    )
    state = {r["id"]: r for r in rows}
    for cid in (survivor_id, merged_id):
        if cid not in state:
            raise NotFound(f"customer {cid} not found")
        if state[cid]["status"] != "active":
            raise Conflict(f"customer {cid} is already merged into another customer")
    after_seq = await conn.fetchval(LAST_SEQ, tenant)
    absorbed = await conn.fetch(
        """UPDATE journey.customer SET merged_into = $2, updated_at = now()
           WHERE tenant_id = $1 AND merged_into = $3 RETURNING id""",
        tenant,
        survivor_id,
        merged_id,
    )
    await conn.execute(
        """UPDATE journey.customer SET status = 'merged', merged_into = $2, updated_at = now()
           WHERE tenant_id = $1 AND id = $3""",
        tenant,
        survivor_id,
        merged_id,
    )
    await conn.execute(
        """UPDATE journey.customer SET strength = greatest(strength, $3), updated_at = now()
           WHERE tenant_id = $1 AND id = $2""",
        tenant,
        survivor_id,
        state[merged_id]["strength"],
    )
    merge_id: int = await conn.fetchval(
        """INSERT INTO journey.merge (tenant_id, survivor_id, merged_id, event_id, rule, via,
               actor, reason, absorbed_ids, survivor_strength, merged_strength, after_seq)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id""",
        tenant,
        survivor_id,
        merged_id,
        event_id,
        rule,
        via,
        actor,
        reason,
        [r[0] for r in absorbed],
        state[survivor_id]["strength"],
        state[merged_id]["strength"],
        after_seq,
    )
    await conn.execute(
        "DELETE FROM journey.context WHERE tenant_id = $1 AND customer_id = $2", tenant, merged_id
    )
    version = max((v for _, v in locked.values()), default=0) + 1
    doc = await rebuild_context(conn, tenant, survivor_id, version)
    await maps_repo.enqueue_customers(conn, tenant, [survivor_id, merged_id])
    await context_repo.notify(
        conn, channel, [f"{tenant}|{survivor_id}|{version}", f"{tenant}|{merged_id}|{version}"]
    )
    MERGES.labels(rule).inc()
    return MergeResult(merge_id, survivor_id, merged_id, doc, version)


async def split(
    conn: asyncpg.Connection,
    *,
    tenant: str,
    customer_id: uuid.UUID,
    actor: str,
    merge_id: int | None = None,
    reason: str | None = None,
    channel: str,
) -> SplitResult:
    """Undo a merge into ``customer_id`` (the latest one unless ``merge_id`` names one)."""
    record = await conn.fetchrow(
        """SELECT * FROM journey.merge
           WHERE tenant_id = $1 AND survivor_id = $2 AND undone_at IS NULL
             AND ($3::bigint IS NULL OR id = $3)
           ORDER BY id DESC LIMIT 1 FOR UPDATE""",
        tenant,
        customer_id,
        merge_id,
    )
    if record is None:
        raise Conflict(
            f"customer {customer_id} has no merge to undo"
            + (f" with id {merge_id}" if merge_id is not None else "")
        )
    restored = record["merged_id"]
    locked = await context_repo.lock_contexts(conn, [(tenant, customer_id), (tenant, restored)])
    await conn.execute(
        """UPDATE journey.customer SET status = 'active', merged_into = NULL, updated_at = now()
           WHERE tenant_id = $1 AND id = $2""",
        tenant,
        restored,
    )
    await conn.execute(
        """UPDATE journey.customer SET merged_into = $2, updated_at = now()
           WHERE tenant_id = $1 AND id = ANY($3::uuid[]) AND merged_into = $4""",
        tenant,
        restored,
        record["absorbed_ids"],
        customer_id,
    )
    since = await conn.fetch(
        """SELECT event_id, identifier_keys FROM journey.event
           WHERE tenant_id = $1 AND customer_id = $2 AND seq > $3 ORDER BY seq""",
        tenant,
        customer_id,
        record["after_seq"],
    )
    since_ids = [r[0] for r in since]
    sides = await conn.fetch(
        """SELECT i.id_type || ':' || i.value AS key, m.id = $2 OR m.merged_into = $2 AS restored
           FROM journey.identifier i
           JOIN journey.customer m ON m.tenant_id = i.tenant_id AND m.id = i.customer_id
           WHERE i.tenant_id = $1
             AND (m.id IN ($2, $3) OR m.merged_into IN ($2, $3))
             AND (i.source_event_id IS NULL OR NOT i.source_event_id = ANY($4::text[]))""",
        tenant,
        restored,
        customer_id,
        since_ids,
    )
    moved = split_attribution(
        [EventSide(r[0], frozenset(r[1])) for r in since],
        restored_keys={r[0] for r in sides if r[1]},
        survivor_keys={r[0] for r in sides if not r[1]},
    )
    await conn.execute(
        """UPDATE journey.event SET customer_id = $3
           WHERE tenant_id = $1 AND customer_id = $2 AND event_id = ANY($4::text[])""",
        tenant,
        customer_id,
        restored,
        moved,
    )
    # Identifiers first tied by a moved event go with it.
    moved_links = await conn.fetch(
        """DELETE FROM journey.identifier
           WHERE tenant_id = $1 AND customer_id = $2 AND source_event_id = ANY($3::text[])
           RETURNING id_type, value, strength, verified_by, source_event_id,
                     first_seen_at, last_seen_at""",
        tenant,
        customer_id,
        moved,
    )
    await repo.upsert_links(
        conn,
        [(tenant, r[0], r[1], restored, r[2], r[3], r[4], r[5], r[6]) for r in moved_links],
    )
    await _recompute_strength(conn, tenant, customer_id)
    await _recompute_strength(conn, tenant, restored)
    await conn.execute(
        "UPDATE journey.merge SET undone_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant,
        record["id"],
    )
    await conn.execute(
        """INSERT INTO journey.split (tenant_id, merge_id, customer_id, restored_id, actor, reason,
               moved_events, moved_identifiers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        tenant,
        record["id"],
        customer_id,
        restored,
        actor,
        reason,
        len(moved),
        len(moved_links),
    )
    version = max((v for _, v in locked.values()), default=0) + 1
    result = SplitResult(record["id"], customer_id, restored, moved, len(moved_links))
    await maps_repo.forget_events(conn, tenant, moved)  # re-derived on the restored side
    await maps_repo.enqueue_customers(conn, tenant, [customer_id, restored])
    for cid in (customer_id, restored):
        result.docs[cid] = (await rebuild_context(conn, tenant, cid, version), version)
    await context_repo.notify(
        conn, channel, [f"{tenant}|{customer_id}|{version}", f"{tenant}|{restored}|{version}"]
    )
    SPLITS.inc()
    return result
