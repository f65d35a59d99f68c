"""The journey health summary: the handful of numbers a CX lead reads first, each with the
previous period of equal length — top pain points, FCR and repeat rate, abandon rate, channel
mix — and named slots other packages fill: ``experience`` (CSAT/NPS by journey position) and
``conformance`` (designed vs real journeys). A slot nobody registered reads
``{"available": false, …}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import asyncpg

from services.journey.quality import fcr, pain
from services.journey.quality.policy import FcrPolicy
from services.journey.quality.rules import DAY_US
from services.journey.quality.schemas import Range
from services.journey.quality.sql import Params, further_gap, policy_window
from services.journey.quality.sql import range_filter as where

# (connection, tenant, period, previous period) -> the slot's section of the summary
HealthSection = Callable[[asyncpg.Connection, str, Range, Range], Awaitable[dict[str, Any]]]
SLOTS = {
    "experience": "CSAT and NPS by journey position (GET /v1/experience)",
    "conformance": "designed vs real journeys (GET /v1/designed-journeys/{name}/conformance)",
}
_sections: dict[str, HealthSection] = {}


def register(slot: str, section: HealthSection) -> None:
    """Fill a slot of the summary (called once at import by the package that owns it)."""
    if slot not in SLOTS:
        raise ValueError(f"unknown health slot {slot!r}; known: {', '.join(SLOTS)}")
    _sections[slot] = section


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _delta(now: float | None, before: float | None) -> float | None:
    return round(now - before, 4) if now is not None and before is not None else None


async def _totals(
    conn: asyncpg.Connection, tenant: str, r: Range, before: Range, policy: FcrPolicy
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per period and channel: [contacts, abandoned, judged, repeated] (FCR under the
    policy, as ``fcr.report``), both periods in one range scan."""
    p = Params([tenant])
    cond = where(p, before.start, r.end, r.segment, contacts=True)
    current = f"day >= {p.add(r.start)}"
    asof = f"{p.add(r.as_of_us)}::bigint"
    gap = further_gap(same_reason=policy.same_reason, reopen_counts=policy.reopen_counts)
    pw = policy_window(p, policy)
    rows = await conn.fetch(
        f"""WITH c AS (SELECT {current} AS cur, channel, abandon_at, at_us, {gap} AS gap,
                              {pw} AS pw
                       FROM journey.map_step WHERE {cond} AND at_us < {asof})
            SELECT cur, channel, count(*), count(*) FILTER (WHERE abandon_at IS NOT NULL),
                   count(*) FILTER (WHERE at_us + pw < {asof}),
                   count(*) FILTER (WHERE at_us + pw < {asof} AND gap <= pw)
            FROM c GROUP BY 1, 2""",  # noqa: S608 - fixed
        *p.values,
    )
    out: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
    for row in rows:
        out[0 if row[0] else 1][row[1]] = list(row[2:])
    return out


def _answerable(r: Range, policy: FcrPolicy) -> bool:
    """The day counts answer ``_totals`` exactly (as ``fcr.answerable`` by channel)."""
    q = fcr.FcrQuery(r.start, r.end, r.as_of_us, "channel", (), r.segment)
    return fcr.answerable(q, policy)


async def _totals_from_counts(
    conn: asyncpg.Connection, tenant: str, r: Range, before: Range, policy: FcrPolicy
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """``_totals`` from the FCR day counts (contacts, judged, repeated) and the pain-point
    day counts (abandoned contacts)."""
    out: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
    qs = [fcr.FcrQuery(p.start, p.end, r.as_of_us, "channel", (), {}) for p in (r, before)]
    for i, body in enumerate(await fcr.reports_from_days(conn, tenant, qs, policy, early=False)):
        for group in body["groups"]:
            block = group["windows"][0]
            out[i][group["key"]] = [group["contacts"], 0, block["judged"], block["repeated"]]
    as_of_day = date(1970, 1, 1) + timedelta(days=r.as_of_us // DAY_US)
    rows = await conn.fetch(
        """SELECT day >= $4, channel, sum(n)::bigint FROM journey.quality_pain_day
           WHERE tenant_id = $1 AND day >= $2 AND day < $3 AND day < $5 AND contact
             AND stat = 'abandon'
           GROUP BY 1, 2""",
        tenant,
        before.start,
        r.end,
        r.start,
        as_of_day,
    )
    for cur, channel, n in rows:
        out[0 if cur else 1].setdefault(channel, [0, 0, 0, 0])[1] = n
    return out


def _fcr(totals: dict[str, list[int]]) -> dict[str, Any]:
    judged = sum(v[2] for v in totals.values())
    repeated = sum(v[3] for v in totals.values())
    contacts = sum(v[0] for v in totals.values())
    return {
        "fcr_rate": _rate(judged - repeated, judged),
        "repeat_rate": _rate(repeated, judged),
        "judged": judged,
        "still_open_share": _rate(contacts - judged, contacts),
    }


async def summary(
    conn: asyncpg.Connection, tenant: str, r: Range, policy: FcrPolicy, *, counts: bool = True
) -> dict[str, Any]:
    """The summary; from the day counts when ``counts`` and they answer exactly."""
    before = Range(r.start - (r.end - r.start), r.start, r.as_of, r.segment)
    pains = await pain.report(
        conn,
        tenant,
        pain.PainQuery("touchpoint", r.start, r.end, r.as_of_us, r.segment, 300_000),
        policy,
        limit=5,
        counts=counts,
    )
    read = _totals_from_counts if counts and _answerable(r, policy) else _totals
    totals, totals_before = await read(conn, tenant, r, before, policy)
    now_w, before_w = _fcr(totals), _fcr(totals_before)
    contacts = sum(v[0] for v in totals.values())
    contacts_before = sum(v[0] for v in totals_before.values())
    abandons = sum(v[1] for v in totals.values())
    abandons_before = sum(v[1] for v in totals_before.values())
    mix: list[dict[str, Any]] = []
    for channel in sorted(totals.keys() | totals_before.keys()):
        share = _rate(totals.get(channel, [0])[0], contacts)
        share_before = _rate(totals_before.get(channel, [0])[0], contacts_before)
        mix.append(
            {
                "channel": channel,
                "contacts": totals.get(channel, [0])[0],
                "share": share,
                "previous_share": share_before,
                "change": _delta(share, share_before),
            }
        )
    mix.sort(key=lambda m: (-int(m["contacts"]), str(m["channel"])))
    body: dict[str, Any] = {
        "period": {"from": r.start.isoformat(), "to": r.end.isoformat()},
        "previous_period": {"from": before.start.isoformat(), "to": before.end.isoformat()},
        "contacts": {"value": contacts, "previous": contacts_before},
        "top_pain_points": pains["pain_points"],
        "fcr": {
            "window": "policy",
            "value": now_w["fcr_rate"],
            "previous": before_w["fcr_rate"],
            "change": _delta(now_w["fcr_rate"], before_w["fcr_rate"]),
            "judged": now_w["judged"],
            "still_open_share": now_w["still_open_share"],
        },
        "repeat_rate": {
            "value": now_w["repeat_rate"],
            "previous": before_w["repeat_rate"],
            "change": _delta(now_w["repeat_rate"], before_w["repeat_rate"]),
        },
        "abandon_rate": {
            "value": _rate(abandons, contacts),
            "previous": _rate(abandons_before, contacts_before),
            "change": _delta(_rate(abandons, contacts), _rate(abandons_before, contacts_before)),
        },
        "channel_mix": mix,
    }
    for slot, what in SLOTS.items():
        section = _sections.get(slot)
        body[slot] = (
            await section(conn, tenant, r, before)
            if section
            else {"available": False, "detail": f"{what}: not built yet"}
        )
    return body
