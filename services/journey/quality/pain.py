"""Pain points: where journeys hurt, per touchpoint, channel, edge or segment, ranked by impact.

Each kind counts affected steps against a base (the rate's denominator); severities in
``SEVERITY``, definitions in ``condition`` and docs/journey-map.md ("Pain points"):
abandons (1.0), callbacks not completed within 48 h (1.0), episodes over 2+ contact channels
with nothing resolved (1.0), repeat contacts within the FCR policy window (0.8), transfer
chains of 2+ (0.6), negative sentiment (0.5), long queue waits (0.4), transfers (0.3).

**impact = affected × severity**; rows are ranked by impact (then kind, then key). Computed
when read from the maintained quality rows, for the period and the previous one of equal length.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

import asyncpg

from services.journey.quality.policy import FcrPolicy
from services.journey.quality.rules import (
    CALLBACK_MISSED,
    CALLBACK_NONE,
    CALLBACK_WITHIN_US,
    NEGATIVE_SENTIMENT_MILLI,
)
from services.journey.quality.sql import Params, further_gap, group_expr, policy_window
from services.journey.quality.sql import range_filter as where

SEVERITY = {
    "abandon": 1.0,
    "callback_not_completed": 1.0,
    "cross_channel_unresolved": 1.0,
    "repeat_contact": 0.8,
    "transfer_chain": 0.6,
    "negative_sentiment": 0.5,
    "long_wait": 0.4,
    "transfer": 0.3,
}
KINDS = tuple(SEVERITY)
SEP = "\x1f"


@dataclass(frozen=True)
class PainQuery:
    by: str
    start: date
    end: date
    as_of_us: int
    segment: dict[str, str]
    long_wait_ms: int
    kind: str | None = None


class Ctx:
    """Parameters of the kind conditions, added to the statement only when a condition uses
    them (PostgreSQL cannot type a parameter no expression mentions)."""

    def __init__(self, p: Params, q: PainQuery, policy: FcrPolicy):
        self.p, self.q, self.policy = p, q, policy
        self.gap = further_gap(same_reason=policy.same_reason, reopen_counts=policy.reopen_counts)

    @cached_property
    def asof(self) -> str:
        return f"{self.p.add(self.q.as_of_us)}::bigint"

    @cached_property
    def pw(self) -> str:
        return policy_window(self.p, self.policy)

    @cached_property
    def long(self) -> str:
        return f"{self.p.add(self.q.long_wait_ms)}::bigint"


def condition(c: Ctx, kind: str) -> tuple[str, str]:
    """(affected, base) of one kind, as SQL conditions on a quality row."""
    if kind == "abandon":
        return "abandon_at IS NOT NULL", "true"
    if kind == "callback_not_completed":
        callbacks = f"callback <> {CALLBACK_NONE} AND at_us + {CALLBACK_WITHIN_US} < {c.asof}"
        return f"{callbacks} AND callback = {CALLBACK_MISSED}", callbacks
    if kind == "cross_channel_unresolved":
        return "cross_unresolved", "episode_end"
    if kind == "repeat_contact":
        judged = f"contact AND at_us + {c.pw} < {c.asof}"
        return f"{judged} AND {c.gap} <= {c.pw}", judged
    if kind == "transfer_chain":
        return "transfers >= 2", "true"
    if kind == "negative_sentiment":
        return f"sentiment_milli <= {NEGATIVE_SENTIMENT_MILLI}", "sentiment_milli IS NOT NULL"
    if kind == "long_wait":
        return f"queue_wait_ms > {c.long}", "queue_wait_ms IS NOT NULL"
    assert kind == "transfer"
    return "transfers >= 1", "true"


def _dimension(q: PainQuery) -> tuple[str, str]:
    extra = " AND prev_activity IS NOT NULL" if q.by == "edge" else ""
    if q.by.startswith("segment."):
        extra = f" AND {q.by.removeprefix('segment.')} IS NOT NULL"
    return group_expr(q.by), extra


Figures = dict[str, dict[str, Any]]  # per key: per kind [affected, base, example], extras


async def _scan(
    conn: asyncpg.Connection, tenant: str, q: PainQuery, policy: FcrPolicy, prev_start: date
) -> tuple[Figures, Figures]:
    """The period and the previous one in one range scan, grouped by (is current, key)."""
    p = Params([tenant])
    cond = where(p, prev_start, q.end, q.segment)
    current = f"day >= {p.add(q.start)}"
    ctx = Ctx(p, q, policy)
    dim, extra = _dimension(q)
    selected = [q.kind] if q.kind else list(KINDS)
    columns = []
    for kind in selected:
        affected, base = condition(ctx, kind)
        columns += [
            f"count(*) FILTER (WHERE {affected})",
            f"count(*) FILTER (WHERE {base})",
            f"max(CASE WHEN {affected} THEN lpad(at_us::text, 20, '0') || '{SEP}' || "
            f"customer_id::text || '{SEP}' || episode || '{SEP}' || step_key END)",
        ]
    columns += [
        "percentile_disc(0.5) WITHIN GROUP (ORDER BY queue_wait_ms)",
        "percentile_disc(0.9) WITHIN GROUP (ORDER BY queue_wait_ms)",
        "coalesce(sum(abandon_wait_ms) FILTER (WHERE abandon_at IS NOT NULL), 0)::bigint",
        "array_agg(abandon_at) FILTER (WHERE abandon_at IS NOT NULL)",
    ]
    rows = await conn.fetch(
        f"""SELECT {current} AS cur, {dim} AS g, {", ".join(columns)}
            FROM journey.quality_step
            WHERE {cond}{extra} AND at_us < {ctx.asof} GROUP BY 1, 2""",  # noqa: S608 - fixed
        *p.values,
    )
    periods: tuple[Figures, Figures] = ({}, {})
    for row in rows:
        values = list(row[2:])
        p50, p90, abandon_wait, wheres = values[-4:]
        per: dict[str, Any] = {"_p50": p50, "_p90": p90, "_abandon_wait": abandon_wait}
        per["_where"] = Counter(wheres or ())
        for i, kind in enumerate(selected):
            per[kind] = values[3 * i : 3 * i + 3]
        periods[0 if row[0] else 1][row[1]] = per
    return periods


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _example(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    at, customer, episode, step = text.split(SEP, 3)
    return {
        "customer_id": customer,
        "journey_key": episode,
        "step_key": step,
        "at_us": int(at),
        "timeline": f"/v1/customers/{customer}/timeline",
    }


async def report(
    conn: asyncpg.Connection, tenant: str, q: PainQuery, policy: FcrPolicy, *, limit: int
) -> dict[str, Any]:
    length = q.end - q.start
    prev_start = q.start - length
    current, previous = await _scan(conn, tenant, q, policy, prev_start)
    rows = []
    for key, per in current.items():
        for kind in [k for k in KINDS if k in per]:
            affected, base, example = per[kind]
            if not affected:
                continue
            before = previous.get(key, {}).get(kind, [0, 0, None])
            rate, prev_rate = _rate(affected, base), _rate(before[0], before[1])
            row: dict[str, Any] = {
                "kind": kind,
                "key": key,
                "affected": affected,
                "base": base,
                "rate": rate,
                "severity": SEVERITY[kind],
                "impact": round(affected * SEVERITY[kind], 3),
                "previous": {"affected": before[0], "base": before[1], "rate": prev_rate},
                "change": {
                    "affected": affected - before[0],
                    "rate": round(rate - prev_rate, 4)
                    if rate is not None and prev_rate is not None
                    else None,
                },
                "example": _example(example),
                "drill_down": _drill_link(q, kind, key),
            }
            if kind == "abandon":
                row["where"] = dict(sorted(per["_where"].items(), key=lambda kv: (-kv[1], kv[0])))
                row["mean_wait_s"] = round(per["_abandon_wait"] / 1000 / affected, 3)
            if kind == "long_wait":
                row["threshold_s"] = q.long_wait_ms / 1000
                row["p50_wait_s"] = per["_p50"] / 1000 if per["_p50"] is not None else None
                row["p90_wait_s"] = per["_p90"] / 1000 if per["_p90"] is not None else None
            rows.append(row)
    rows.sort(key=lambda r: (-r["impact"], r["kind"], r["key"]))
    return {
        "period": {"from": q.start.isoformat(), "to": q.end.isoformat()},
        "previous_period": {"from": prev_start.isoformat(), "to": q.start.isoformat()},
        "by": q.by,
        "total": len(rows),
        "pain_points": rows[:limit],
    }


def _drill_link(q: PainQuery, kind: str, key: str) -> dict[str, str]:
    return {
        "path": "/v1/pain-points/journeys",
        "kind": kind,
        "by": q.by,
        "key": key,
        "from": q.start.isoformat(),
        "to": q.end.isoformat(),
    }


async def affected_steps(
    conn: asyncpg.Connection,
    tenant: str,
    q: PainQuery,
    policy: FcrPolicy,
    *,
    key: str,
    after: tuple[int, str, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The steps behind one pain-point row, newest first (keyset on at, customer, step)."""
    assert q.kind is not None
    p = Params([tenant])
    cond = where(p, q.start, q.end, q.segment)
    ctx = Ctx(p, q, policy)
    dim, extra = _dimension(q)
    affected, _base = condition(ctx, q.kind)
    keyed = f"{dim} = {p.add(key)}"
    page = ""
    if after is not None:
        a, b, c = p.add(after[0]), p.add(after[1]), p.add(after[2])
        page = f" AND (at_us, customer_id::text, step_key) < ({a}, {b}, {c})"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT customer_id::text, step_key, episode, at_us, activity, channel, reason
            FROM journey.quality_step
            WHERE {cond}{extra} AND at_us < {ctx.asof} AND {keyed} AND {affected}{page}
            ORDER BY at_us DESC, customer_id::text DESC, step_key DESC
            LIMIT {p.add(limit)}""",  # noqa: S608 - fixed
        *p.values,
    )
    return rows
