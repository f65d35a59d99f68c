"""Survey responses counted by (UTC day, kind, score) — ``journey.experience_survey_day`` —
what the journey health summary's ``experience`` slot reads (``health.py``).

Kept where survey events are stored and removed: ``add`` in the transaction that stores a chunk
of events (``identity.repository.insert_events``; a chunk holding an event already stored fails
and is retried without it, counts included), ``remove`` in the erasure's transaction before the
customer's events are deleted. A response counts when its ``survey`` is ``csat``, ``nps`` or
``ces`` and its ``score`` a number (as ``service._survey`` reads it); merges and splits move no
response between days, so the counts need nothing from the map's compactor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

SURVEY_TYPE = "survey.responded"
SURVEYS = ("csat", "nps", "ces")  # as stats.SURVEYS
Cell = tuple[str, date, str, float]  # tenant, UTC day, kind, score


def survey_of(data: Any) -> tuple[str, float] | None:
    """(kind, score) of a response's data, or None when it does not count."""
    if not isinstance(data, dict):
        return None
    kind, score = data.get("survey"), data.get("score")
    if kind not in SURVEYS or isinstance(score, bool) or not isinstance(score, int | float):
        return None
    return kind, float(score)


def cells(events: Iterable[tuple[str, datetime, Any]]) -> Counter[Cell]:
    """(tenant, time, data) of survey events, counted by cell."""
    out: Counter[Cell] = Counter()
    for tenant, at, data in events:
        found = survey_of(data)
        if found is not None:
            out[(tenant, at.astimezone(UTC).date(), *found)] += 1
    return out


async def apply(conn: asyncpg.Connection, delta: Counter[Cell], sign: int) -> None:
    """Add (sign 1) or remove (-1) counts, in key order; drop counts that reached zero."""
    rows = sorted((cell, n * sign) for cell, n in delta.items() if n)
    if not rows:
        return
    cols = [list(col) for col in zip(*[(*cell, n) for cell, n in rows], strict=True)]
    await conn.execute(
        """INSERT INTO journey.experience_survey_day AS s (tenant_id, day, kind, score, n)
           SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::float8[], $5::bigint[])
           ON CONFLICT (tenant_id, day, kind, score) DO UPDATE SET n = s.n + excluded.n""",
        *cols,
    )
    if sign < 0:
        await conn.execute(
            """DELETE FROM journey.experience_survey_day s
               USING unnest($1::text[], $2::date[], $3::text[], $4::float8[]) AS u(t, d, k, v)
               WHERE s.tenant_id = u.t AND s.day = u.d AND s.kind = u.k AND s.score = u.v
                 AND s.n = 0""",
            *cols[:4],
        )


async def add(conn: asyncpg.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Count the survey responses among event rows being stored (``EventRow``: tenant, event
    id, customer, type, time, identifier keys, outcome, rule, envelope JSON)."""
    found = [(r[0], r[4], orjson.loads(r[8]).get("data")) for r in rows if r[3] == SURVEY_TYPE]
    if found:
        await apply(conn, cells(found), 1)


async def remove(conn: asyncpg.Connection, tenant: str, where: str, *args: Any) -> None:
    """Uncount the survey responses among the tenant's events matching ``where`` (a fixed SQL
    condition on ``journey.event``, parameters from $2), before they are deleted."""
    rows = await conn.fetch(
        f"""SELECT tenant_id, time, (envelope -> 'data')::text AS data FROM journey.event
            WHERE tenant_id = $1 AND type = '{SURVEY_TYPE}' AND ({where})""",  # noqa: S608
        tenant,
        *args,
    )
    found = [(r["tenant_id"], r["time"], orjson.loads(r["data"] or "null")) for r in rows]
    await apply(conn, cells(found), -1)


async def read(
    conn: asyncpg.Connection, tenant: str, start: date, split: date, end: date
) -> tuple[dict[str, Counter[float]], dict[str, Counter[float]]]:
    """Per period ([split, end) and [start, split)) and kind: responses per score, over the
    whole UTC days [start, end)."""
    rows = await conn.fetch(
        """SELECT day >= $3, kind, score, sum(n)::bigint FROM journey.experience_survey_day
           WHERE tenant_id = $1 AND day >= $2 AND day < $4
           GROUP BY 1, 2, 3""",
        tenant,
        start,
        split,
        end,
    )
    out: tuple[dict[str, Counter[float]], dict[str, Counter[float]]] = ({}, {})
    for cur, kind, score, n in rows:
        out[0 if cur else 1].setdefault(kind, Counter())[score] += n
    return out


# A tenant's counts from its stored responses (as migration journey_0010 fills them): the
# bench's load, and the tests' reference.
FILL_SQL = """
INSERT INTO journey.experience_survey_day
SELECT tenant_id, (time AT TIME ZONE 'UTC')::date, envelope -> 'data' ->> 'survey',
       (envelope -> 'data' ->> 'score')::float8, count(*)
FROM journey.event
WHERE tenant_id = $1 AND type = 'survey.responded'
  AND envelope -> 'data' ->> 'survey' IN ('csat', 'nps', 'ces')
  AND jsonb_typeof(envelope -> 'data' -> 'score') = 'number'
GROUP BY 1, 2, 3, 4"""


async def fill(conn: asyncpg.Connection, tenant: str) -> None:
    """A tenant's counts from its stored responses (its counts must be empty)."""
    await conn.execute(FILL_SQL, tenant)
