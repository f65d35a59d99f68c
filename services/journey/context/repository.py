"""SQL of the context documents (asyncpg, inside the caller's transaction; never commits).

Every statement filters on the tenant. Batched statements take parallel arrays and ``unnest``
them, so a chunk of hundreds of events costs a handful of round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.journey.context.batch import split_by_ordinal
from services.journey.context.rules import Doc
from services.journey.identity.repository import TenantCustomer
from shared.events import Envelope, parse_normalized


async def lock_contexts(
    conn: asyncpg.Connection, ids: Sequence[TenantCustomer]
) -> dict[TenantCustomer, tuple[Doc, int]]:
    """Load and row-lock the context documents (in key order, so lockers never cross)."""
    ordered = sorted(set(ids), key=lambda k: (k[0], str(k[1])))
    rows = await conn.fetch(
        """SELECT x.tenant_id, x.customer_id, x.doc::text, x.version
           FROM unnest($1::text[], $2::uuid[]) AS k(t, id)
           JOIN journey.context x ON x.tenant_id = k.t AND x.customer_id = k.id
           ORDER BY x.tenant_id, x.customer_id::text FOR UPDATE OF x""",
        [k[0] for k in ordered],
        [k[1] for k in ordered],
    )
    return {(r[0], r[1]): (orjson.loads(r[2]), r[3]) for r in rows}


async def merged_away(
    conn: asyncpg.Connection, ids: Sequence[TenantCustomer]
) -> set[TenantCustomer]:
    """Those of ``ids`` that were merged into another customer (their context moved with them)."""
    if not ids:
        return set()
    rows = await conn.fetch(
        """SELECT c.tenant_id, c.id
           FROM unnest($1::text[], $2::uuid[]) AS k(t, id)
           JOIN journey.customer c ON c.tenant_id = k.t AND c.id = k.id
           WHERE c.merged_into IS NOT NULL""",
        [k[0] for k in ids],
        [k[1] for k in ids],
    )
    return {(r[0], r[1]) for r in rows}


async def save_contexts(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, uuid.UUID, bytes, int]]
) -> None:
    if rows:
        await conn.execute(
            """INSERT INTO journey.context (tenant_id, customer_id, doc, version)
               SELECT t, id, d::json, v FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int[])
                   AS u(t, id, d, v)
               ON CONFLICT (tenant_id, customer_id) DO UPDATE
                   SET doc = excluded.doc, version = excluded.version, updated_at = now()""",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2].decode() for r in rows],
            [r[3] for r in rows],
        )


async def notify(conn: asyncpg.Connection, channel: str, payloads: Sequence[str]) -> None:
    """Delivered to listeners when the transaction commits (never before, never if rolled back)."""
    if payloads:
        await conn.execute(
            "SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) AS p", channel, list(payloads)
        )


async def engagement_of(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> dict[str, Any] | None:
    """The engagement folded into a customer's document (alerts publishes it; no event does)."""
    text: str | None = await conn.fetchval(
        "SELECT (doc -> 'engagement')::text FROM journey.context "
        "WHERE tenant_id = $1 AND customer_id = $2",
        tenant,
        customer_id,
    )
    found: dict[str, Any] | None = orjson.loads(text) if text and text != "null" else None
    return found


async def events_of(
    conn: asyncpg.Connection, tenant: str, customer_ids: Sequence[uuid.UUID]
) -> list[Envelope]:
    rows = await conn.fetch(
        """SELECT envelope::text FROM journey.event
           WHERE tenant_id = $1 AND customer_id = ANY($2::uuid[])""",
        tenant,
        list(customer_ids),
    )
    return [parse_normalized(r[0].encode()) for r in rows]


BY_IDENTIFIER = """
SELECT coalesce(c.merged_into, c.id), x.doc::text, coalesce(x.version, 0)
FROM journey.identifier i
JOIN journey.customer c ON c.tenant_id = i.tenant_id AND c.id = i.customer_id
LEFT JOIN journey.context x
  ON x.tenant_id = i.tenant_id AND x.customer_id = coalesce(c.merged_into, c.id)
WHERE i.tenant_id = $1 AND i.id_type = $2 AND i.value = $3
ORDER BY i.strength DESC, i.last_seen_at DESC
LIMIT 8"""

BY_ID = """
SELECT coalesce(c.merged_into, c.id), x.doc::text, coalesce(x.version, 0)
FROM journey.customer c
LEFT JOIN journey.context x
  ON x.tenant_id = c.tenant_id AND x.customer_id = coalesce(c.merged_into, c.id)
WHERE c.tenant_id = $1 AND c.id = $2"""


async def by_identifier(
    pool: asyncpg.Pool, tenant: str, id_type: str, value: str
) -> list[asyncpg.Record]:
    """The customers holding an identifier (resolved through merges), strongest link first, with
    their context documents: the screen pop's one query."""
    rows: list[asyncpg.Record] = await pool.fetch(BY_IDENTIFIER, tenant, id_type, value)
    return rows


# BY_IDENTIFIER for many look-ups at once: each (tenant, type, value) of the arrays, numbered
# by its position, gets exactly the rows BY_IDENTIFIER would give it (the same joins, order and
# limit, per key: a LATERAL subquery), followed by that number.
BY_IDENTIFIERS = """
SELECT s.customer_id, s.doc, s.version, k.n
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(t, ty, v, n)
CROSS JOIN LATERAL (
  SELECT coalesce(c.merged_into, c.id) AS customer_id, x.doc::text AS doc,
         coalesce(x.version, 0) AS version, i.strength, i.last_seen_at
  FROM journey.identifier i
  JOIN journey.customer c ON c.tenant_id = i.tenant_id AND c.id = i.customer_id
  LEFT JOIN journey.context x
    ON x.tenant_id = i.tenant_id AND x.customer_id = coalesce(c.merged_into, c.id)
  WHERE i.tenant_id = k.t AND i.id_type = k.ty AND i.value = k.v
  ORDER BY i.strength DESC, i.last_seen_at DESC
  LIMIT 8) s
ORDER BY k.n, s.strength DESC, s.last_seen_at DESC"""


async def by_identifiers(
    pool: asyncpg.Pool, keys: Sequence[tuple[str, str, str]]
) -> list[list[asyncpg.Record]]:
    """``by_identifier`` of each (tenant, id_type, value) of ``keys``, in one statement: one
    list per key, in order (its first three columns are ``by_identifier``'s)."""
    rows = await pool.fetch(
        BY_IDENTIFIERS, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]
    )
    return split_by_ordinal(rows, len(keys))


async def by_id(pool: asyncpg.Pool, tenant: str, customer_id: uuid.UUID) -> asyncpg.Record | None:
    """A customer (resolved through merges) with its context document."""
    row: asyncpg.Record | None = await pool.fetchrow(BY_ID, tenant, customer_id)
    return row


async def timeline_rows(
    pool: asyncpg.Pool,
    tenant: str,
    customer_id: uuid.UUID,
    *,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """A customer's and its merged customers' events, newest first, before (time, event id)."""
    rows: list[asyncpg.Record] = await pool.fetch(
        """SELECT e.envelope::text, e.time FROM journey.event e
           WHERE e.tenant_id = $1 AND e.customer_id IN (
               SELECT m.id FROM journey.customer m
               WHERE m.tenant_id = $1 AND (m.id = $2 OR m.merged_into = $2))
             AND ($3::timestamptz IS NULL OR (e.time, e.event_id) < ($3, $4))
           ORDER BY e.time DESC, e.event_id DESC LIMIT $5""",
        tenant,
        customer_id,
        before[0] if before else None,
        before[1] if before else "",
        limit,
    )
    return rows
