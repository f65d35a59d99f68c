"""The ``experience`` slot of the journey health summary (``GET /v1/journey-health``): CSAT,
NPS and (when answered) CES of the survey responses received in the period and in the previous
one, with their sample sizes — registered at import of the experience package.

Read from the stored ``survey.responded`` events through their partial index
(``ix_event_experience``: tenant, type, time), grouped by kind and score in SQL: the read
touches the period's responses only (no step, journey or other event), and erased customers'
responses are gone with their events. Scores are summarised as ``GET /v1/experience`` does
(``stats.summary``). Not split by segment: with a segment filter the slot says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import asyncpg

from services.journey.experience import stats
from services.journey.quality import health
from services.journey.quality.schemas import Range

# the headline figure of each kind and what else each period's summary gives
HEADLINE = {"csat": "mean", "nps": "score", "ces": "mean"}


def _midnight(day: Any) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


async def responses(
    conn: asyncpg.Connection, tenant: str, r: Range, before: Range
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per period (current, previous) and kind: the scores of responses received in it
    (UTC days of the period, before ``as_of``)."""
    rows = await conn.fetch(
        """SELECT e.time >= $3 AS cur, e.envelope -> 'data' ->> 'survey' AS kind,
                  (e.envelope -> 'data' ->> 'score')::float8 AS score, count(*) AS n
           FROM journey.event e
           WHERE e.tenant_id = $1 AND e.type = 'survey.responded'
             AND e.time >= $2 AND e.time < $4 AND e.time < $5
             AND e.envelope -> 'data' ->> 'survey' = ANY($6::text[])
             AND jsonb_typeof(e.envelope -> 'data' -> 'score') = 'number'
           GROUP BY 1, 2, 3""",
        tenant,
        _midnight(before.start),
        _midnight(r.start),
        _midnight(r.end),
        r.as_of,
        list(stats.SURVEYS),
    )
    out: tuple[dict[str, list[float]], dict[str, list[float]]] = ({}, {})
    for cur, kind, score, n in sorted(rows, key=lambda row: (row[0], row[1], row[2])):
        out[0 if cur else 1].setdefault(kind, []).extend([score] * n)
    return out


def _delta(now: float | int | None, before: float | int | None) -> float | None:
    return round(now - before, 4) if now is not None and before is not None else None


async def section(conn: asyncpg.Connection, tenant: str, r: Range, before: Range) -> dict[str, Any]:
    if r.segment:
        return {
            "available": False,
            "detail": "survey responses are not split by segment here: "
            "GET /v1/experience?segment.<trait>= gives them by journey position",
        }
    now, then = await responses(conn, tenant, r, before)
    body: dict[str, Any] = {
        "available": True,
        "responses": "survey.responded received in the period (UTC days, before as_of)",
    }
    for kind in stats.SURVEYS:
        if kind == "ces" and kind not in now and kind not in then:
            continue  # CES only when the tenant asks it
        current = stats.summary(kind, now.get(kind, []))
        previous = stats.summary(kind, then.get(kind, []))
        headline = HEADLINE[kind]
        body[kind] = {
            "value": current[headline],
            "previous": previous[headline],
            "change": _delta(current[headline], previous[headline]),
            "n": current["n"],
            "previous_n": previous["n"],
            "summary": current,
            "previous_summary": previous,
        }
    return body


health.register("experience", section)
