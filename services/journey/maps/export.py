"""Drill-down from a number on the map to the journeys behind it, and the step log export.

Both read ``journey.map_journey`` in key order (day, customer, journey) with keyset pages, so a
page costs the same at the start and the end of a big log. A drill-down page examines at most
``MAX_SCAN`` journeys and hands back a cursor to continue. Exports stream (CSV or XES,
IEEE 1849-2016) without holding the log in memory.
"""

from __future__ import annotations

import base64
import csv
import io
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any
from xml.sax.saxutils import quoteattr

import asyncpg
import orjson

from services.journey.maps import activities, rules
from services.journey.maps.schemas import MapQuery, invalid
from services.journey.maps.service import journey_filter
from services.journey.maps.settings import MapConfig
from shared.cursors import cursor_key, invalid_cursor

PAGE = 2000
MAX_SCAN = 50_000
Match = Callable[[list[str]], bool]


def matcher(
    granularity: str,
    config: MapConfig,
    *,
    edge: str | None,
    node: str | None,
    variant: str | None,
) -> tuple[Callable[[str], str], Match]:
    """The activity mapping and a test on a journey's mapped path (``edge=A>B``, ``node=A``,
    ``variant=A>B>C``; exactly one)."""
    given = [(n, v) for n, v in (("edge", edge), ("node", node), ("variant", variant)) if v]
    if len(given) != 1:
        raise invalid("edge", "give exactly one of edge, node or variant")
    f = activities.mapper(granularity, config.stages)
    name, value = given[0]
    if name == "node":
        return f, lambda path: value in path
    parts = value.split(">")
    if name == "edge":
        if len(parts) != 2 or not all(parts):
            raise invalid("edge", "write an edge as source>target")
        a, b = parts
        return f, lambda path: any(x == a and y == b for x, y in zip(path, path[1:], strict=False))
    return f, lambda path: path == parts


def parse_cursor(cursor: str | None) -> tuple[date, uuid.UUID, str]:
    """Where a drill-down page starts: after (day, customer, journey key); 422 if not ours."""
    if not cursor:
        return date.min, uuid.UUID(int=0), ""
    try:
        day, customer, key = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return date.fromisoformat(day), uuid.UUID(customer), cursor_key(key)
    except (ValueError, TypeError) as exc:
        raise invalid_cursor() from exc


async def _page(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    after: tuple[date, uuid.UUID, str],
    size: int,
) -> list[asyncpg.Record]:
    where, args = journey_filter(q, 7)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT customer_id, journey_key, day, start_at, steps, activities, times_us,
                   age_group, region, tier, lifecycle_stage, tenure
            FROM journey.map_journey
            WHERE tenant_id = $1 AND kind = $2 AND (day, customer_id, journey_key) > ($3, $4, $5)
                  {where}
            ORDER BY day, customer_id, journey_key LIMIT $6""",  # noqa: S608 - whitelisted
        tenant, q.kind, *after, size, *args,
    )  # fmt: skip
    return rows


def _segment(row: Any) -> dict[str, str | None]:
    return {name: row[name] for name in rules.SEGMENTS}


async def journeys_page(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    mapping: Callable[[str], str],
    match: Match,
    *,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    after = parse_cursor(cursor)
    items: list[dict[str, Any]] = []
    scanned = 0
    more = False
    while len(items) < limit:
        if scanned >= MAX_SCAN:
            more = True  # bounded work per request: the cursor continues the scan
            break
        rows = await _page(conn, tenant, q, after, PAGE)
        for row in rows:
            scanned += 1
            after = (row["day"], row["customer_id"], row["journey_key"])
            path = [mapping(a) for a in row["activities"]]
            if match(path):
                items.append(
                    {
                        "customer_id": str(row["customer_id"]),
                        "journey_key": row["journey_key"],
                        "start_at": row["start_at"].isoformat(),
                        "steps": row["steps"],
                        "path": path,
                        "segment": _segment(row),
                        "timeline": f"/v1/customers/{row['customer_id']}/timeline",
                    }
                )
                if len(items) == limit:
                    more = True
                    break
        if len(rows) < PAGE:
            break
    next_cursor = None
    if more:
        next_cursor = base64.urlsafe_b64encode(
            orjson.dumps([after[0].isoformat(), str(after[1]), after[2]])
        ).decode()
    return {"items": items, "next_cursor": next_cursor, "scanned": scanned}


COLUMNS = ["case_id", "activity", "timestamp", "channel", "touchpoint", *rules.SEGMENTS]
COLUMNS += ["customer_id", "journey_key"]


async def export_rows(
    pool: asyncpg.Pool, tenant: str, q: MapQuery, config: MapConfig
) -> AsyncIterator[list[list[Any]]]:
    """Pages of step rows in the order of ``COLUMNS``; journeys in key order, steps in order."""
    f = activities.mapper(q.granularity, config.stages)
    after = parse_cursor(None)
    while True:
        async with pool.acquire() as conn:
            rows = await _page(conn, tenant, q, after, PAGE)
        if not rows:
            return
        out = []
        for row in rows:
            customer = str(row["customer_id"])
            case = customer if q.journey == "customer" else f"{customer}/{row['journey_key']}"
            segment = [row[name] for name in rules.SEGMENTS]
            for activity, us in zip(row["activities"], row["times_us"], strict=True):
                channel, _, touchpoint = activity.partition(":")
                out.append(
                    [case, f(activity), rules.from_us(us).isoformat(), channel, touchpoint,
                     *segment, customer, row["journey_key"]]
                )  # fmt: skip
        yield out
        last = rows[-1]
        after = (last["day"], last["customer_id"], last["journey_key"])


async def csv_stream(rows: AsyncIterator[list[list[Any]]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield buffer.getvalue().encode()
    async for page in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([["" if v is None else v for v in row] for row in page])
        yield buffer.getvalue().encode()


XES_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<log xes.version="1849-2016" xes.features="" xmlns="http://www.xes-standard.org/">
  <extension name="Concept" prefix="concept" uri="http://www.xes-standard.org/concept.xesext"/>
  <extension name="Time" prefix="time" uri="http://www.xes-standard.org/time.xesext"/>
  <global scope="trace">
    <string key="concept:name" value="__INVALID__"/>
  </global>
  <global scope="event">
    <string key="concept:name" value="__INVALID__"/>
    <date key="time:timestamp" value="1970-01-01T00:00:00.000+00:00"/>
  </global>
  <classifier name="Activity" keys="concept:name"/>
  <string key="concept:name" value="waypoint journey map"/>
"""


async def xes_stream(rows: AsyncIterator[list[list[Any]]]) -> AsyncIterator[bytes]:
    """One trace per journey (rows of a journey are consecutive), one event per step."""
    yield XES_HEAD.encode()
    current: str | None = None
    async for page in rows:
        parts: list[str] = []
        for row in page:
            case = row[0]
            if case != current:
                if current is not None:
                    parts.append("  </trace>\n")
                current = case
                parts.append(
                    f'  <trace>\n    <string key="concept:name" value={quoteattr(case)}/>\n'
                )
                for name, value in zip(rules.SEGMENTS, row[5:10], strict=True):
                    if value is not None:
                        parts.append(
                            f"    <string key={quoteattr(name)} value={quoteattr(value)}/>\n"
                        )
            parts.append(
                "    <event>\n"
                f'      <string key="concept:name" value={quoteattr(row[1])}/>\n'
                f'      <date key="time:timestamp" value="{row[2]}"/>\n'
                f'      <string key="channel" value={quoteattr(row[3])}/>\n'
                f'      <string key="touchpoint" value={quoteattr(row[4])}/>\n'
                "    </event>\n"
            )
        yield "".join(parts).encode()
    if current is not None:
        yield b"  </trace>\n"
    yield b"</log>\n"
