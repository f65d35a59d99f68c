"""The journey health summary: the handful of numbers a CX lead reads first, each with the
previous period of equal length — top pain points, FCR and repeat rate, abandon rate, channel
mix — and named slots other packages fill: ``experience`` (CSAT/NPS by journey position) and
``conformance`` (designed vs real journeys). A slot nobody registered reads
``{"available": false, …}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.journey.quality import fcr, pain
from services.journey.quality.policy import FcrPolicy
from services.journey.quality.schemas import Range
from services.journey.quality.sql import Params
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


async def _totals(conn: asyncpg.Connection, tenant: str, r: Range) -> dict[str, list[int]]:
    p = Params([tenant])
    cond = where(p, r.start, r.end, r.segment, contacts=True)
    rows = await conn.fetch(
        f"""SELECT channel, count(*), count(*) FILTER (WHERE abandon_at IS NOT NULL)
            FROM journey.quality_step WHERE {cond} AND at_us <= {p.add(r.as_of_us)}
            GROUP BY channel""",  # noqa: S608 - fixed
        *p.values,
    )
    return {row[0]: [row[1], row[2]] for row in rows}


async def summary(
    conn: asyncpg.Connection, tenant: str, r: Range, policy: FcrPolicy
) -> dict[str, Any]:
    before = Range(r.start - (r.end - r.start), r.start, r.as_of, r.segment)
    pains = await pain.report(
        conn,
        tenant,
        pain.PainQuery("touchpoint", r.start, r.end, r.as_of_us, r.segment, 300_000),
        policy,
        limit=5,
    )
    fcr_now, fcr_before = [
        (
            await fcr.report(
                conn,
                tenant,
                fcr.FcrQuery(x.start, x.end, x.as_of_us, None, (), x.segment),
                policy,
            )
        )["total"]
        for x in (r, before)
    ]
    now_w, before_w = fcr_now["windows"][0], fcr_before["windows"][0]
    totals, totals_before = await _totals(conn, tenant, r), await _totals(conn, tenant, before)
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
