"""SQL of the identity graph: customers, identifiers, provisional links and the event log with
each event's resolution (asyncpg, inside the caller's transaction; never commits).

Every statement filters on the tenant. Batched statements take parallel arrays and ``unnest``
them, so a chunk of hundreds of events costs a handful of round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.journey.experience import counts as survey_counts

TenantCustomer = tuple[str, uuid.UUID]


@dataclass
class HolderRow:
    tenant_id: str
    key: str
    home_id: uuid.UUID  # the customer the identifier row points at
    customer_id: uuid.UUID  # resolved through merges
    link_strength: int
    customer_strength: int
    created_at: datetime
    last_seen_at: datetime


async def existing_events(
    conn: asyncpg.Connection, pairs: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    rows = await conn.fetch(
        """SELECT e.tenant_id, e.event_id FROM unnest($1::text[], $2::text[]) AS k(t, id)
           JOIN journey.event e ON e.tenant_id = k.t AND e.event_id = k.id""",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return {(r[0], r[1]) for r in rows}


async def lock_identifiers(conn: asyncpg.Connection, lock_keys: list[int]) -> None:
    """Serialize events of one identity across workers: advisory locks, taken in sorted order."""
    await conn.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k",
        sorted(set(lock_keys)),
    )


async def holders(
    conn: asyncpg.Connection, keys: Iterable[tuple[str, str, str]]
) -> list[HolderRow]:
    """Customers holding each (tenant, type, value), resolved through merges."""
    ks = list(keys)
    # The survivor is joined on ``merged_into`` (NULL for an active customer), not on
    # ``coalesce(merged_into, id)``: the planner took that join for a near-empty one and
    # crossed every key with every customer (3 s per chunk at 1,500 customers; auto_explain).
    rows = await conn.fetch(
        """SELECT i.tenant_id, i.id_type, i.value, i.customer_id AS home_id,
                  coalesce(r.id, c.id), i.strength, coalesce(r.strength, c.strength),
                  coalesce(r.created_at, c.created_at), i.last_seen_at
           FROM unnest($1::text[], $2::text[], $3::text[]) AS k(t, ty, v)
           JOIN journey.identifier i ON i.tenant_id = k.t AND i.id_type = k.ty AND i.value = k.v
           JOIN journey.customer c ON c.tenant_id = i.tenant_id AND c.id = i.customer_id
           LEFT JOIN journey.customer r ON r.tenant_id = c.tenant_id AND r.id = c.merged_into
           WHERE c.merged_into IS NULL OR r.id IS NOT NULL""",
        [k[0] for k in ks],
        [k[1] for k in ks],
        [k[2] for k in ks],
    )
    return [
        HolderRow(
            tenant_id=r[0],
            key=f"{r[1]}:{r[2]}",
            home_id=r[3],
            customer_id=r[4],
            link_strength=r[5],
            customer_strength=r[6],
            created_at=r[7],
            last_seen_at=r[8],
        )
        for r in rows
    ]


async def insert_customers(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, uuid.UUID, int, datetime]]
) -> None:
    if rows:
        await conn.execute(
            """INSERT INTO journey.customer (tenant_id, id, strength, created_at)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::int2[], $4::timestamptz[])
               ON CONFLICT DO NOTHING""",
            *zip(*rows, strict=True),
        )


async def raise_strengths(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, uuid.UUID, int]]
) -> None:
    if rows:
        await conn.execute(
            """UPDATE journey.customer c
               SET strength = greatest(c.strength, u.s), updated_at = now()
               FROM unnest($1::text[], $2::uuid[], $3::int2[]) AS u(t, id, s)
               WHERE c.tenant_id = u.t AND c.id = u.id AND c.strength < u.s""",
            *zip(*rows, strict=True),
        )


LinkRow = tuple[str, str, str, uuid.UUID, int, str | None, str, datetime, datetime]


async def upsert_links(conn: asyncpg.Connection, rows: Sequence[LinkRow]) -> None:
    """(tenant, type, value, customer, strength, verified_by, source event, first, last seen)."""
    if rows:
        await conn.execute(
            """INSERT INTO journey.identifier AS i (tenant_id, id_type, value, customer_id,
                   strength, verified_by, source_event_id, first_seen_at, last_seen_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::int2[],
                   $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[])
               ON CONFLICT (tenant_id, id_type, value, customer_id) DO UPDATE SET
                   strength = greatest(i.strength, excluded.strength),
                   verified_by = CASE WHEN excluded.strength > i.strength
                                      THEN excluded.verified_by ELSE i.verified_by END,
                   first_seen_at = least(i.first_seen_at, excluded.first_seen_at),
                   last_seen_at = greatest(i.last_seen_at, excluded.last_seen_at)""",
            *zip(*rows, strict=True),
        )


EVENT_COLUMNS = (
    "tenant_id", "event_id", "customer_id", "type", "time", "identifier_keys", "outcome", "rule",
    "envelope",
)  # fmt: skip
EventRow = tuple[str, str, uuid.UUID | None, str, datetime, list[str], str, str, str]


async def insert_events(conn: asyncpg.Connection, rows: Sequence[EventRow]) -> None:
    """(tenant, event id, customer, type, time, identifier keys, outcome, rule, envelope JSON).

    One COPY per chunk (an ``executemany`` was one INSERT per event: a quarter of the chunk's
    database time). A row already stored is a unique violation, as with a plain INSERT: the
    chunk is retried and the row seen as a duplicate (``existing_events``)."""
    if rows:
        await conn.copy_records_to_table(
            "event", schema_name="journey", columns=EVENT_COLUMNS, records=rows
        )
        await survey_counts.add(conn, rows)  # the health summary's survey day counts


async def insert_provisional(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, uuid.UUID, uuid.UUID, str, int, str]]
) -> None:
    if rows:
        await conn.executemany(
            """INSERT INTO journey.provisional_link
                   (tenant_id, customer_id, other_id, via, strength, event_id)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            rows,
        )


async def merged_among(
    conn: asyncpg.Connection, ids: Sequence[TenantCustomer]
) -> set[TenantCustomer]:
    rows = await conn.fetch(
        """SELECT c.tenant_id, c.id FROM unnest($1::text[], $2::uuid[]) AS k(t, id)
           JOIN journey.customer c ON c.tenant_id = k.t AND c.id = k.id
           WHERE c.status = 'merged'""",
        [k[0] for k in ids],
        [k[1] for k in ids],
    )
    return {(r[0], r[1]) for r in rows}


async def customer_row(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT id, status, merged_into, strength, created_at FROM journey.customer
           WHERE tenant_id = $1 AND id = $2""",
        tenant,
        customer_id,
    )
    return row


async def active_id(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> uuid.UUID | None:
    """The customer's id, or the one it was merged into (None: no such customer)."""
    row = await customer_row(conn, tenant, customer_id)
    return None if row is None else row["merged_into"] or row["id"]


async def active_ids(
    conn: asyncpg.Connection,
    tenant: str,
    *,
    after: uuid.UUID,
    only: uuid.UUID | None,
    limit: int,
) -> list[uuid.UUID]:
    """A page of the tenant's active customers in id order (or just ``only``), after ``after``."""
    rows = await conn.fetch(
        """SELECT id FROM journey.customer
           WHERE tenant_id = $1 AND status = 'active' AND id > $2
             AND ($3::uuid IS NULL OR id = $3)
           ORDER BY id LIMIT $4""",
        tenant,
        after,
        only,
        limit,
    )
    return [r[0] for r in rows]


async def member_ids(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> list[uuid.UUID]:
    """The customer and every customer merged into it (their events and links are its own)."""
    rows = await conn.fetch(
        """SELECT id FROM journey.customer WHERE tenant_id = $1 AND id = $2
           UNION ALL
           SELECT id FROM journey.customer WHERE tenant_id = $1 AND merged_into = $2""",
        tenant,
        customer_id,
    )
    return [r[0] for r in rows]


async def identities(
    conn: asyncpg.Connection, tenant: str, customer_ids: Sequence[uuid.UUID]
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id_type, value, customer_id, strength, verified_by, source_event_id,
                  first_seen_at, last_seen_at
           FROM journey.identifier WHERE tenant_id = $1 AND customer_id = ANY($2::uuid[])
           ORDER BY strength DESC, last_seen_at DESC""",
        tenant,
        list(customer_ids),
    )
    return [identity_dict(r) for r in rows]


def identity_dict(r: Any) -> dict[str, Any]:
    return {
        "type": r["id_type"],
        "value": r["value"],
        "linked_customer_id": str(r["customer_id"]),
        "strength": r["strength"],
        "verified_by": r["verified_by"],
        "source_event_id": r["source_event_id"],
        "first_seen_at": r["first_seen_at"].isoformat(),
        "last_seen_at": r["last_seen_at"].isoformat(),
    }


async def strongest_identifier(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> asyncpg.Record | None:
    """(type, value) of the customer's strongest, most recently seen identifier."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT i.id_type, i.value FROM journey.identifier i
           JOIN journey.customer m ON m.tenant_id = i.tenant_id AND m.id = i.customer_id
           WHERE i.tenant_id = $1 AND (m.id = $2 OR m.merged_into = $2)
           ORDER BY i.strength DESC, i.last_seen_at DESC LIMIT 1""",
        tenant,
        customer_id,
    )
    return row


async def merges_of(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> list[asyncpg.Record]:
    """Merges into or of the customer, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT id, survivor_id, merged_id, event_id, rule, via, actor, reason, created_at,
                  undone_at FROM journey.merge
           WHERE tenant_id = $1 AND (survivor_id = $2 OR merged_id = $2) ORDER BY id""",
        tenant,
        customer_id,
    )
    return rows


async def splits_of(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> list[asyncpg.Record]:
    """Splits of or restoring the customer, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT id, merge_id, customer_id, restored_id, actor, reason, moved_events,
                  moved_identifiers, created_at FROM journey.split
           WHERE tenant_id = $1 AND (customer_id = $2 OR restored_id = $2) ORDER BY id""",
        tenant,
        customer_id,
    )
    return rows


async def provisional_links_of(
    conn: asyncpg.Connection, tenant: str, customer_id: uuid.UUID
) -> list[asyncpg.Record]:
    """Provisional links from or to the customer, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT customer_id, other_id, via, strength, event_id, created_at
           FROM journey.provisional_link
           WHERE tenant_id = $1 AND (customer_id = $2 OR other_id = $2) ORDER BY id""",
        tenant,
        customer_id,
    )
    return rows
