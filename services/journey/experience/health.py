"""The ``experience`` slot of the journey health summary (``GET /v1/journey-health``): CSAT,
NPS and (when answered) CES of the survey responses received in the period and in the previous
one, with their sample sizes — registered when the experience endpoints are imported.

Read from the survey day counts (``counts.py``: responses by UTC day, kind and score, kept where
events are stored and erased) for whole days, and from the stored ``survey.responded`` events
(their partial index on tenant, type and time) for the day of ``as_of`` up to it: reading the
events of whole periods took over a second for 200,000 responses (docs/benchmarks.md). Scores
are summarised as ``GET /v1/experience`` does (``stats.summary``). Not split by segment: with a
segment filter the slot says so.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time
from typing import Any

import asyncpg

from services.journey.experience import counts, stats
from services.journey.quality import health
from services.journey.quality.schemas import Range

# the headline figure of each kind and what else each period's summary gives
HEADLINE = {"csat": "mean", "nps": "score", "ces": "mean"}


def _midnight(day: Any) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


async def _scan(
    conn: asyncpg.Connection, tenant: str, lo: datetime, hi: datetime
) -> dict[str, Counter[float]]:
    """Per kind: responses per score received in [lo, hi), from the stored events (through
    their partial index on tenant, type and time)."""
    rows = await conn.fetch(
        """SELECT e.envelope -> 'data' ->> 'survey' AS kind,
                  (e.envelope -> 'data' ->> 'score')::float8 AS score, count(*) AS n
           FROM journey.event e
           WHERE e.tenant_id = $1 AND e.type = 'survey.responded'
             AND e.time >= $2 AND e.time < $3
             AND e.envelope -> 'data' ->> 'survey' = ANY($4::text[])
             AND jsonb_typeof(e.envelope -> 'data' -> 'score') = 'number'
           GROUP BY 1, 2""",
        tenant,
        lo,
        hi,
        list(stats.SURVEYS),
    )
    out: dict[str, Counter[float]] = {}
    for kind, score, n in rows:
        out.setdefault(kind, Counter())[score] += n
    return out


async def responses(
    conn: asyncpg.Connection, tenant: str, r: Range, before: Range
) -> tuple[dict[str, Counter[float]], dict[str, Counter[float]]]:
    """Per period (current, previous) and kind: responses per score received in it (UTC days
    of the period, before ``as_of``): whole days from the survey day counts
    (``counts.py``), the day of ``as_of`` up to it from the events."""
    as_of = r.as_of.astimezone(UTC)
    today = as_of.date()
    whole_end = min(r.end, today)
    out: tuple[dict[str, Counter[float]], dict[str, Counter[float]]] = ({}, {})
    if before.start < whole_end:
        out = await counts.read(conn, tenant, before.start, r.start, whole_end)
    if before.start <= today < r.end and as_of > _midnight(today):
        period = out[0 if today >= r.start else 1]
        for kind, scores in (await _scan(conn, tenant, _midnight(today), as_of)).items():
            period.setdefault(kind, Counter()).update(scores)
    return out


def _scores(histogram: Counter[float]) -> list[float]:
    return [score for score, n in sorted(histogram.items()) for _ in range(n)]


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
        current = stats.summary(kind, _scores(now.get(kind, Counter())))
        previous = stats.summary(kind, _scores(then.get(kind, Counter())))
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
