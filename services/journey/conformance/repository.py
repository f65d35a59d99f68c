"""SQL of designed journeys (asyncpg, in the caller's transaction; every statement filters on the
tenant). Real journeys are read from the map's maintained ``journey.map_journey``."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import asyncpg

from services.journey.conformance.schemas import DesignedJourney, DesignedJourneyPublic
from services.journey.maps.repository import lock_tenant
from services.journey.maps.schemas import MapQuery
from services.journey.maps.service import journey_filter


def design_of(row: asyncpg.Record) -> DesignedJourneyPublic:
    return DesignedJourneyPublic(
        name=row["name"],
        version=row["version"],
        updated_at=row["updated_at"].isoformat(),
        definition=DesignedJourney.model_validate_json(row["definition"]),
    )


async def save(
    conn: asyncpg.Connection, tenant: str, name: str, design: DesignedJourney
) -> DesignedJourneyPublic:
    """Create or replace; the version grows by one on every change (the same body keeps it)."""
    row = await conn.fetchrow(
        """INSERT INTO journey.designed_journey AS d (tenant_id, name, version, definition)
           VALUES ($1, $2, 1, $3::jsonb)
           ON CONFLICT (tenant_id, name) DO UPDATE SET
               definition = excluded.definition,
               version = d.version + (d.definition IS DISTINCT FROM excluded.definition)::int,
               updated_at = CASE WHEN d.definition IS DISTINCT FROM excluded.definition
                                 THEN now() ELSE d.updated_at END
           RETURNING name, version, updated_at, definition::text""",
        tenant,
        name,
        design.model_dump_json(),
    )
    assert row is not None
    return design_of(row)


async def get(conn: asyncpg.Connection, tenant: str, name: str) -> DesignedJourneyPublic | None:
    row = await conn.fetchrow(
        """SELECT name, version, updated_at, definition::text FROM journey.designed_journey
           WHERE tenant_id = $1 AND name = $2""",
        tenant,
        name,
    )
    return design_of(row) if row else None


async def all_of(conn: asyncpg.Connection, tenant: str) -> list[DesignedJourneyPublic]:
    rows = await conn.fetch(
        """SELECT name, version, updated_at, definition::text FROM journey.designed_journey
           WHERE tenant_id = $1 ORDER BY name""",
        tenant,
    )
    return [design_of(r) for r in rows]


async def delete(conn: asyncpg.Connection, tenant: str, name: str) -> bool:
    """Its conformance counts go with it (foreign keys); the tenant's map lock first, so no
    compaction batch is adding to them meanwhile."""
    await lock_tenant(conn, tenant)
    status = await conn.execute(
        "DELETE FROM journey.designed_journey WHERE tenant_id = $1 AND name = $2", tenant, name
    )
    return bool(status.endswith(" 1"))


JOURNEY_COLUMNS = """customer_id, journey_key, day, start_at, activities, times_us,
                     age_group, region, tier, lifecycle_stage, tenure"""


async def journeys(conn: asyncpg.Connection, tenant: str, q: MapQuery) -> list[asyncpg.Record]:
    """Every journey of the query (kind, range, segment filters), in key order."""
    where, args = journey_filter(q, 3)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {JOURNEY_COLUMNS} FROM journey.map_journey
            WHERE tenant_id = $1 AND kind = $2{where}
            ORDER BY day, customer_id, journey_key""",  # noqa: S608 - whitelisted columns
        tenant,
        q.kind,
        *args,
    )
    return rows


async def journeys_after(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    after: tuple[date, uuid.UUID, str],
    size: int,
) -> list[Any]:
    """A keyset page of journeys after (day, customer, journey key)."""
    where, args = journey_filter(q, 7)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {JOURNEY_COLUMNS} FROM journey.map_journey
            WHERE tenant_id = $1 AND kind = $2 AND (day, customer_id, journey_key) > ($3, $4, $5)
                  {where}
            ORDER BY day, customer_id, journey_key LIMIT $6""",  # noqa: S608 - whitelisted
        tenant, q.kind, *after, size, *args,
    )  # fmt: skip
    return rows


SEPARATOR = "\x1f"  # joins a path into one text value (activities never hold control characters)


async def variants(
    conn: asyncpg.Connection, tenant: str, q: MapQuery, by: str | None
) -> list[asyncpg.Record]:
    """(activities, segment value of ``by`` or NULL, journeys) of the query's journeys: one row
    per distinct stored path (and segment value), counted in PostgreSQL."""
    where, args = journey_filter(q, 3)
    column = by if by is not None else "NULL::text"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT activities, {column} AS seg, count(*) AS n FROM journey.map_journey
            WHERE tenant_id = $1 AND kind = $2{where}
            GROUP BY 1, 2""",  # noqa: S608 - whitelisted columns
        tenant,
        q.kind,
        *args,
    )
    return rows


async def late_pairs(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    by: str | None,
    pairs: list[tuple[int, str, int, int, int, int]],
) -> list[asyncpg.Record]:
    """For timed variants: (variant, segment value, pairs too slow, journeys). ``pairs`` are
    (variant, joined path, pair number, index before, index after, limit µs), indexes 0-based;
    journeys of a variant with no pair too slow are not returned."""
    where, args = journey_filter(q, 9)
    column = f"j.{by}" if by is not None else "NULL::text"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""WITH v AS (
                SELECT u.idx, string_to_array(u.p, E'\\x1f') AS path, u.k, u.i0, u.i1, u.lim
                FROM unnest($3::int[], $4::text[], $5::int[], $6::int[], $7::int[], $8::bigint[])
                    AS u(idx, p, k, i0, i1, lim)),
            hit AS (
                SELECT v.idx, {column} AS seg, array_agg(v.k ORDER BY v.k) AS ks
                FROM journey.map_journey j JOIN v ON j.activities = v.path
                WHERE j.tenant_id = $1 AND j.kind = $2{where.replace(" AND ", " AND j.")}
                  AND j.times_us[v.i1 + 1] - j.times_us[v.i0 + 1] > v.lim
                GROUP BY j.customer_id, j.journey_key, v.idx, 2)
            SELECT idx, seg, ks, count(*) AS n FROM hit GROUP BY 1, 2, 3""",  # noqa: S608
        tenant,
        q.kind,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        [p[2] for p in pairs],
        [p[3] for p in pairs],
        [p[4] for p in pairs],
        [p[5] for p in pairs],
        *args,
    )
    return rows
