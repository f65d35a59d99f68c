"""SQL of experience and feedback (asyncpg, in the caller's transaction; every statement
filters on the tenant). Surveys and feedback are read from the event store, each under the
customer it belongs to now (``merged_into`` always names the surviving customer)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.journey.maps.schemas import MapQuery
from services.journey.maps.service import journey_filter


async def customers_in(conn: asyncpg.Connection, tenant: str, q: MapQuery) -> list[uuid.UUID]:
    """Customers with at least one journey of the query (kind, range, segments)."""
    where, args = journey_filter(q, 3)
    rows = await conn.fetch(
        f"""SELECT DISTINCT customer_id FROM journey.map_journey
            WHERE tenant_id = $1 AND kind = $2{where} ORDER BY customer_id""",  # noqa: S608
        tenant,
        q.kind,
        *args,
    )
    return [r[0] for r in rows]


async def events_of(
    conn: asyncpg.Connection, tenant: str, kind: str, customers: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """(customer, event id, time, data as JSON text) of one event type, for these customers."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT coalesce(c.merged_into, c.id) AS customer_id, e.event_id, e.time,
                  (e.envelope -> 'data')::text AS data
           FROM journey.event e
           JOIN journey.customer c ON c.tenant_id = e.tenant_id AND c.id = e.customer_id
           WHERE e.tenant_id = $1 AND e.type = $2
             AND coalesce(c.merged_into, c.id) = ANY($3::uuid[])""",
        tenant,
        kind,
        list(customers),
    )
    return rows


async def events_between(
    conn: asyncpg.Connection,
    tenant: str,
    kind: str,
    start: datetime | None,
    end: datetime | None,
) -> list[asyncpg.Record]:
    """(customer, event id, time, data as JSON text) of one event type in [start, end)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT coalesce(c.merged_into, c.id) AS customer_id, e.event_id, e.time,
                  (e.envelope -> 'data')::text AS data
           FROM journey.event e
           JOIN journey.customer c ON c.tenant_id = e.tenant_id AND c.id = e.customer_id
           WHERE e.tenant_id = $1 AND e.type = $2
             AND ($3::timestamptz IS NULL OR e.time >= $3)
             AND ($4::timestamptz IS NULL OR e.time < $4)""",
        tenant,
        kind,
        start,
        end,
    )
    return rows


async def known_activities(conn: asyncpg.Connection, tenant: str, names: Sequence[str]) -> set[str]:
    """The tenant's map activities named exactly, or by their touchpoint, in ``names``."""
    if not names:
        return set()
    rows = await conn.fetch(
        """SELECT DISTINCT activity FROM journey.map_node
           WHERE tenant_id = $1 AND grain = 'm' AND stat = 'count'
             AND (activity = ANY($2::text[]) OR split_part(activity, ':', 2) = ANY($2::text[]))""",
        tenant,
        list(names),
    )
    return {r[0] for r in rows}
