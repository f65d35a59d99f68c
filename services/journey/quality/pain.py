"""Pain points: where journeys hurt, per touchpoint, channel, edge or segment, ranked by impact.

Each kind counts affected steps against a base (the rate's denominator); severities in
``SEVERITY``, definitions in ``condition`` and docs/journey-map.md ("Pain points"):
abandons (1.0), callbacks not completed within 48 h (1.0), episodes over 2+ contact channels
with nothing resolved (1.0), repeat contacts within the FCR policy window (0.8), transfer
chains of 2+ (0.6), negative sentiment (0.5), long queue waits (0.4), transfers (0.3).

**impact = affected × severity**; rows are ranked by impact (then kind, then key). Read, for
the period and the previous one of equal length, from the pain-point day counts
(``journey.quality_pain_day``, repeat contacts from the FCR day counts) when they answer
exactly (``answerable``), else from a scan of the maintained quality rows: the same report.
Queue-wait p50/p90 are the map's log-bucket estimates (within 4.33 %) in both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from typing import Any

import asyncpg

from services.journey.maps.histogram import bucket, bucket_value_s, quantile_s
from services.journey.quality import fcr
from services.journey.quality.policy import FcrPolicy, parse_window
from services.journey.quality.rules import (
    CALLBACK_MISSED,
    CALLBACK_NONE,
    CALLBACK_WITHIN_US,
    DAY_US,
    LADDER_DAYS,
    LONG_WAIT_MS,
    NEGATIVE_SENTIMENT_MILLI,
    mode_of,
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
_EPOCH = date(1970, 1, 1)


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
            f"customer_id::text || '{SEP}' || episode || '{SEP}' || step_key END "
            'COLLATE "C")',
        ]
    columns += [
        "percentile_disc(0.5) WITHIN GROUP (ORDER BY queue_wait_ms)",
        "percentile_disc(0.9) WITHIN GROUP (ORDER BY queue_wait_ms)",
        "coalesce(sum(abandon_wait_ms) FILTER (WHERE abandon_at IS NOT NULL), 0)::bigint",
        "array_agg(abandon_at) FILTER (WHERE abandon_at IS NOT NULL)",
    ]
    rows = await conn.fetch(
        f"""SELECT {current} AS cur, {dim} AS g, {", ".join(columns)}
            FROM journey.map_step
            WHERE {cond}{extra} AND at_us < {ctx.asof} GROUP BY 1, 2""",  # noqa: S608 - fixed
        *p.values,
    )
    periods: tuple[Figures, Figures] = ({}, {})
    for row in rows:
        values = list(row[2:])
        p50, p90, abandon_wait, wheres = values[-4:]
        per: dict[str, Any] = {"_p50": _wait_s(p50), "_p90": _wait_s(p90)}
        per["_abandon_wait"] = abandon_wait
        per["_where"] = Counter(wheres or ())
        for i, kind in enumerate(selected):
            per[kind] = values[3 * i : 3 * i + 3]
        periods[0 if row[0] else 1][row[1]] = per
    return periods


def _wait_s(ms: int | None) -> float | None:
    """A queue wait as the map reports it: its log bucket's estimate, in seconds."""
    return None if ms is None else bucket_value_s(bucket(ms * 1000))


# --- the fast path: the pain-point day counts ---------------------------------------------------


def answerable(q: PainQuery, policy: FcrPolicy) -> bool:
    """The day counts answer exactly when ``as_of`` is a UTC midnight (every condition on
    ``as_of`` is then one on the day), the rows are grouped by touchpoint or channel, no
    segment is involved, the long-wait threshold is the counted one, and (for repeat
    contacts) the FCR day counts answer the policy."""
    if q.as_of_us % DAY_US or q.segment or q.by not in ("touchpoint", "channel"):
        return False
    if q.long_wait_ms != LONG_WAIT_MS and q.kind in (None, "long_wait"):
        return False
    repeat = fcr.FcrQuery(q.start, q.end, q.as_of_us, q.by, (), {})
    return q.kind not in (None, "repeat_contact") or fcr.answerable(repeat, policy)


async def _counts(
    conn: asyncpg.Connection, tenant: str, q: PainQuery, policy: FcrPolicy, prev_start: date
) -> tuple[Figures, Figures]:
    """``_scan``'s figures (without examples) from the day counts."""
    as_of_day = _EPOCH + timedelta(days=q.as_of_us // DAY_US)
    dim = "activity" if q.by == "touchpoint" else "channel"
    rows = await conn.fetch(
        f"""SELECT day >= $4 AS cur, day < $5 AS settled, {dim}, stat, value, sum(n)::bigint
            FROM journey.quality_pain_day
            WHERE tenant_id = $1 AND day >= $2 AND day < $3 AND day < $6
            GROUP BY 1, 2, 3, 4, 5""",  # noqa: S608 - fixed column
        tenant,
        prev_start,
        q.end,
        q.start,
        as_of_day - timedelta(days=2),  # callbacks judged: at + 48 h < as_of
        as_of_day,
    )
    stats: tuple[dict[str, Counter[str]], dict[str, Counter[str]]] = ({}, {})
    waits: tuple[dict[str, Counter[int]], dict[str, Counter[int]]] = ({}, {})
    wheres: tuple[dict[str, Counter[str]], dict[str, Counter[str]]] = ({}, {})
    for cur, settled, key, stat, value, n in rows:
        i = 0 if cur else 1
        counts = stats[i].setdefault(key, Counter())
        if stat in ("callback", "callback_missed"):
            if settled:
                counts[stat] += n
        elif stat == "wait":
            waits[i].setdefault(key, Counter())[int(value)] += n
        elif stat == "abandon":
            counts[stat] += n
            wheres[i].setdefault(key, Counter())[value] += n
        else:
            counts[stat + value] += n
    repeats = ({}, {}) if q.kind not in (None, "repeat_contact") else await _repeats(
        conn, tenant, q, policy, prev_start
    )  # fmt: skip
    selected = [q.kind] if q.kind else list(KINDS)
    periods: tuple[Figures, Figures] = ({}, {})
    for i in (0, 1):
        for key, c in stats[i].items():
            if not c["rows"]:
                continue
            hist = waits[i].get(key, Counter())
            figures = {
                "abandon": [c["abandon"], c["rows"]],
                "callback_not_completed": [c["callback_missed"], c["callback"]],
                "cross_channel_unresolved": [c["cross_unresolved"], c["episode_end"]],
                "repeat_contact": repeats[i].get(key, [0, 0]),
                "transfer_chain": [c["transfer2"], c["rows"]],
                "negative_sentiment": [c["negative"], c["sentiment"]],
                "long_wait": [c["long"], sum(hist.values())],
                "transfer": [c["transfer1"], c["rows"]],
            }
            per: dict[str, Any] = {
                "_p50": quantile_s(hist, 0.5),
                "_p90": quantile_s(hist, 0.9),
                "_abandon_wait": c["abandon_wait"],
                "_where": wheres[i].get(key, Counter()),
            }
            for kind in selected:
                per[kind] = [*figures[kind], None]
            periods[i][key] = per
    return periods


async def _repeats(
    conn: asyncpg.Connection, tenant: str, q: PainQuery, policy: FcrPolicy, prev_start: date
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per key, [repeated, judged] under the policy in each period, from the FCR day counts
    (both periods in one read)."""
    out: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
    qs = [
        fcr.FcrQuery(start, end, q.as_of_us, q.by, (), {})
        for start, end in ((q.start, q.end), (prev_start, q.start))
    ]
    for i, body in enumerate(await fcr.reports_from_days(conn, tenant, qs, policy, early=False)):
        for group in body["groups"]:
            block = group["windows"][0]
            out[i][group["key"]] = [block["repeated"], block["judged"]]
    return out


async def _examples(
    conn: asyncpg.Connection,
    tenant: str,
    q: PainQuery,
    policy: FcrPolicy,
    shown: list[tuple[str, str]],
) -> list[str | None]:
    """The latest affected step of each shown (kind, key) row (``_scan``'s example), from the
    stored examples by day (``journey.quality_pain_example``) in one read: the latest over the
    days the kind's condition holds on (callbacks: judged 48 h before ``as_of``; repeat
    contacts: cells of the policy's mode whose window, for their reason and channel, holds
    the further contact and has elapsed)."""
    if not shown:
        return []
    as_of_day = q.as_of_us // DAY_US
    dim = "activity" if q.by == "touchpoint" else "channel"
    mode = mode_of(policy.same_reason, policy.reopen_counts)
    windows = sorted({policy.default_us} | {parse_window(o.window) for o in policy.overrides})
    days = [us // DAY_US for us in windows]
    p = Params([tenant])
    latest = [f"max(example) FILTER (WHERE day < {p.add(as_of_day - d)}::int + date "
              f"'1970-01-01')" for d in (0, 2, *days)]  # fmt: skip
    kinds = sorted({kind for kind, _ in shown if kind != "repeat_contact"})
    rows = await conn.fetch(
        f"""SELECT {dim}, kind, min(channel), {", ".join(latest)}
            FROM journey.quality_pain_example
            WHERE tenant_id = $1 AND day >= {p.add(q.start)} AND day < {p.add(q.end)}
              AND {dim} = ANY({p.add(sorted({key for _, key in shown}))}::text[])
              AND (kind = ANY({p.add(kinds)}::text[]) OR kind LIKE {p.add(f"r:{mode}:%")})
            GROUP BY 1, 2""",  # noqa: S608 - fixed column
        *p.values,
    )
    found: dict[tuple[str, str], str] = {}
    for key, kind, channel, before_as_of, settled, *judged in rows:
        if not kind.startswith("r:"):
            text = settled if kind == "callback_not_completed" else before_as_of
            if text is not None:
                found[(kind, key)] = text
            continue
        _r, _mode, t, reason = kind.split(":", 3)
        window = policy.window_for(reason or None, channel, {})
        text = judged[windows.index(window)]
        if text is not None and int(t) <= LADDER_DAYS.index(window // DAY_US):
            if text > found.get(("repeat_contact", key), ""):
                found[("repeat_contact", key)] = text
    return [found.get(row) for row in shown]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _example_of(text: str | None) -> dict[str, Any] | None:
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
    conn: asyncpg.Connection,
    tenant: str,
    q: PainQuery,
    policy: FcrPolicy,
    *,
    limit: int,
    counts: bool = True,
) -> dict[str, Any]:
    """The ranked pain points; from the day counts when ``counts`` and they answer exactly."""
    length = q.end - q.start
    prev_start = q.start - length
    fast = counts and answerable(q, policy)
    read = _counts if fast else _scan
    current, previous = await read(conn, tenant, q, policy, prev_start)
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
                "example": _example_of(example),
                "drill_down": _drill_link(q, kind, key),
            }
            if kind == "abandon":
                row["where"] = dict(sorted(per["_where"].items(), key=lambda kv: (-kv[1], kv[0])))
                row["mean_wait_s"] = round(per["_abandon_wait"] / 1000 / affected, 3)
            if kind == "long_wait":
                row["threshold_s"] = q.long_wait_ms / 1000
                row["p50_wait_s"] = per["_p50"]
                row["p90_wait_s"] = per["_p90"]
            rows.append(row)
    rows.sort(key=lambda r: (-r["impact"], r["kind"], r["key"]))
    if fast:
        shown = rows[:limit]
        texts = await _examples(conn, tenant, q, policy, [(r["kind"], r["key"]) for r in shown])
        for row, text in zip(shown, texts, strict=True):
            row["example"] = _example_of(text)
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
            FROM journey.map_step
            WHERE {cond}{extra} AND at_us < {ctx.asof} AND {keyed} AND {affected}{page}
            ORDER BY at_us DESC, customer_id::text DESC, step_key DESC
            LIMIT {p.add(limit)}""",  # noqa: S608 - fixed
        *p.values,
    )
    return rows
