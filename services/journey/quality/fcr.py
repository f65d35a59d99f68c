"""First-contact resolution and repeat contact, computed when read from the maintained
per-contact gaps (``journey.map_step``; see ``rules.judge`` for the definition).

Why at query time: a contact's outcome depends on the window (per reason, channel and segment
in the policy, plus any windows asked for side by side) and on the moment it is judged; the
gaps that decide it are maintained exactly, so the count is one indexed range scan with a
handful of FILTER aggregates, whatever the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg

from services.journey.quality import rules
from services.journey.quality.policy import FcrPolicy, parse_window
from services.journey.quality.sql import Params, further_gap, group_expr, policy_window
from services.journey.quality.sql import range_filter as where


@dataclass(frozen=True)
class FcrQuery:
    start: date
    end: date
    as_of_us: int
    by: str | None  # None: totals only
    windows: tuple[tuple[str, int], ...]  # (label, µs), shown after the policy's
    segment: dict[str, str]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _window_block(
    label: str, contacts: int, judged: int, repeated: int, early: int
) -> dict[str, Any]:
    still_open = contacts - judged
    return {
        "window": label,
        "judged": judged,
        "resolved": judged - repeated,
        "repeated": repeated,
        "fcr_rate": _rate(judged - repeated, judged),
        "repeat_rate": _rate(repeated, judged),
        "still_open": still_open,
        "still_open_share": _rate(still_open, contacts),
        "already_repeated": early,
    }


async def report(
    conn: asyncpg.Connection, tenant: str, q: FcrQuery, policy: FcrPolicy
) -> dict[str, Any]:
    p = Params([tenant])
    cond = where(p, q.start, q.end, q.segment, contacts=True)
    asof = p.add(q.as_of_us)
    gap = further_gap(same_reason=policy.same_reason, reopen_counts=policy.reopen_counts)
    pw = policy_window(p, policy)
    group = group_expr(q.by) if q.by else "NULL::text"
    windows = [("policy", "pw"), *((label, f"{p.add(us)}::bigint") for label, us in q.windows)]
    aggregates = []
    for _label, w in windows:
        aggregates += [
            f"count(*) FILTER (WHERE at_us + {w} < {asof})",
            f"count(*) FILTER (WHERE at_us + {w} < {asof} AND gap <= {w})",
            f"count(*) FILTER (WHERE at_us + {w} >= {asof} AND gap <= {w} "
            f"AND at_us + gap <= {asof})",
        ]
    judged_pw = f"at_us + pw < {asof}"
    aggregates += [
        "count(*) FILTER (WHERE resolved IS NOT NULL)",
        "count(*) FILTER (WHERE resolved)",
        f"count(*) FILTER (WHERE {judged_pw} AND resolved AND gap <= pw)",
        f"count(*) FILTER (WHERE {judged_pw} AND resolved AND (gap IS NULL OR gap > pw))",
        f"count(*) FILTER (WHERE {judged_pw} AND NOT resolved AND gap <= pw)",
        f"count(*) FILTER (WHERE {judged_pw} AND NOT resolved AND (gap IS NULL OR gap > pw))",
    ]
    statement = f"""
        WITH c AS (
            SELECT {group} AS g, at_us, {gap} AS gap, {pw} AS pw, resolved
            FROM journey.map_step WHERE {cond} AND at_us < {asof})
        SELECT g, GROUPING(g) AS total, count(*), {", ".join(aggregates)}
        FROM c GROUP BY GROUPING SETS ((g), ())"""  # noqa: S608 - fixed expressions, values as parameters
    rows = await conn.fetch(statement, *p.values)
    total: dict[str, Any] = _group(None, 0, [], len(windows))
    groups = []
    for row in rows:
        body = _group(row[0], row[2], list(row[3:]), len(windows), [w[0] for w in windows])
        if row[1]:
            total = body
        else:
            groups.append(body)
    groups.sort(key=lambda g: (-g["contacts"], str(g["key"])))
    return {"total": total, "groups": groups if q.by else []}


def _group(
    key: str | None,
    contacts: int,
    values: list[int],
    n_windows: int,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    if not values:
        values = [0] * (3 * n_windows + 6)
    labels = labels or ["policy"] * n_windows
    blocks = [
        _window_block(labels[i], contacts, *values[3 * i : 3 * i + 3]) for i in range(n_windows)
    ]
    known, declared, yes_rep, yes_res, no_rep, no_res = values[3 * n_windows :]
    judged = yes_rep + yes_res + no_rep + no_res
    return {
        "key": key,
        "contacts": contacts,
        "windows": blocks,
        "declared": {
            "known": known,
            "resolved": declared,
            "rate": _rate(declared, known),
            "vs_observed": {
                "window": "policy",
                "judged": judged,
                "declared_resolved_and_resolved": yes_res,
                "declared_resolved_but_repeated": yes_rep,
                "declared_unresolved_but_resolved": no_res,
                "declared_unresolved_and_repeated": no_rep,
                "declared_rate": _rate(yes_rep + yes_res, judged),
                "observed_rate": _rate(yes_res + no_res, judged),
                "agreement": _rate(yes_res + no_rep, judged),
            },
        },
    }


def node_fcr(contacts: int, judged: int, repeated: int) -> dict[str, Any]:
    """The ``fcr`` object of a map node (performance view)."""
    return {
        "window": "policy",
        "contacts": contacts,
        "judged": judged,
        "fcr_rate": _rate(judged - repeated, judged),
        "repeat_contact_rate": _rate(repeated, judged),
        "still_open_share": _rate(contacts - judged, contacts),
    }


# --- the fast path: the FCR day counts ----------------------------------------------------------


def _days(us: int) -> int | None:
    """A window as a ladder day count, or None when the day counts cannot answer it."""
    if us % rules.DAY_US == 0 and us // rules.DAY_US in rules.LADDER_DAYS:
        return us // rules.DAY_US
    return None


def answerable(q: FcrQuery, policy: FcrPolicy) -> bool:
    """The day counts answer exactly when ``as_of`` is a UTC midnight, every window (asked
    for and in the policy) is a ladder window, and no segment is involved."""
    windows = [us for _, us in q.windows] + [policy.default_us]
    windows += [parse_window(o.window) for o in policy.overrides]
    return (
        q.as_of_us % rules.DAY_US == 0
        and not q.segment
        and not (q.by or "").startswith("segment.")
        and not any(o.segment for o in policy.overrides)
        and all(_days(us) is not None for us in windows)
    )


async def report_from_days(
    conn: asyncpg.Connection, tenant: str, q: FcrQuery, policy: FcrPolicy
) -> dict[str, Any]:
    """``report`` from the day counts (see ``answerable``): the same figures."""
    return (await reports_from_days(conn, tenant, [q], policy))[0]


async def reports_from_days(
    conn: asyncpg.Connection,
    tenant: str,
    qs: Sequence[FcrQuery],
    policy: FcrPolicy,
    *,
    early: bool = True,
) -> list[dict[str, Any]]:
    """``report_from_days`` of several periods that share ``as_of``, ``by`` and the windows
    (a period and the previous one), from one read of the day counts. ``early=False`` leaves
    ``already_repeated`` at 0 (pain points and health read only judged and repeated): no read
    of the rows of the days whose windows are still open."""
    q = qs[0]
    assert all((o.as_of_us, o.by, o.windows) == (q.as_of_us, q.by, q.windows) for o in qs)
    as_of_day = q.as_of_us // rules.DAY_US
    mode = rules.mode_of(policy.same_reason, policy.reopen_counts)
    ladder = {d: i for i, d in enumerate(rules.LADDER_DAYS)}
    policy_days = {_days(policy.default_us)} | {
        _days(parse_window(o.window)) for o in policy.overrides
    }
    asked = [(label, _days(us)) for label, us in q.windows]
    distinct = sorted({d for d in policy_days | {d for _, d in asked} if d is not None})
    p = Params([tenant])
    sums = [f"sum(n) FILTER (WHERE day < {p.add(as_of_day)}::int - {p.add(d)}::int + date "
            f"'1970-01-01')::bigint" for d in distinct]  # fmt: skip
    which = " ".join(
        f"WHEN day >= {p.add(o.start)} AND day < {p.add(o.end)} THEN {i}" for i, o in enumerate(qs)
    )
    rows = await conn.fetch(
        f"""SELECT CASE {which} END AS period, reason, activity, team, declared, threshold,
                   sum(n)::bigint, {", ".join(sums)}
            FROM journey.quality_fcr_day
            WHERE tenant_id = $1 AND mode = {p.add(mode)}
              AND day >= {p.add(min(o.start for o in qs))} AND day < {p.add(max(o.end for o in qs))}
              AND day < date '1970-01-01' + {p.add(as_of_day)}::int
            GROUP BY 1, 2, 3, 4, 5, 6""",  # noqa: S608 - fixed expressions
        *p.values,
    )
    n_windows = 1 + len(asked)
    width = 3 * n_windows + 6
    totals: list[dict[str | None, list[int]]] = [{} for _ in qs]
    contacts: list[dict[str | None, int]] = [{} for _ in qs]
    for period, reason, activity, team, declared, t, n, *judged_by in rows:
        if period is None:
            continue
        judged = dict(zip(distinct, (int(v or 0) for v in judged_by), strict=True))
        channel = activity.partition(":")[0]
        wp = policy.window_for(reason or None, channel, {}) // rules.DAY_US
        keys: list[str | None] = [None]
        if q.by:
            by_key = {
                "reason": reason or "(none)",
                "channel": channel,
                "agent_team": team or "(none)",
                "touchpoint": activity,
            }
            keys.append(by_key[q.by])
        for key in keys:
            acc = totals[period].setdefault(key, [0] * width)
            contacts[period][key] = contacts[period].get(key, 0) + n
            for i, days in enumerate([wp, *(d for _, d in asked)]):
                assert days is not None
                j = judged[days]
                acc[3 * i] += j
                if t <= ladder[days]:
                    acc[3 * i + 1] += j
            base = 3 * n_windows
            j, repeated = judged[wp], t <= ladder[wp]
            acc[base] += n if declared else 0
            acc[base + 1] += n if declared == 1 else 0
            if declared == 1:
                acc[base + 2 if repeated else base + 3] += j
            elif declared == 2:
                acc[base + 4 if repeated else base + 5] += j
    labels = ["policy", *(label for label, _ in q.windows)]
    out = []
    for period, pq in enumerate(qs):
        found = await _open_repeated(conn, tenant, pq, policy) if early else {}
        groups = []
        total = _group(None, 0, [], n_windows, labels)
        for key, acc in totals[period].items():
            for i in range(n_windows):
                acc[3 * i + 2] = found.get(key, [0] * n_windows)[i]
            body = _group(key, contacts[period][key], acc, n_windows, labels)
            if key is None:
                total = body
            else:
                groups.append(body)
        groups.sort(key=lambda g: (-g["contacts"], str(g["key"])))
        out.append({"total": total, "groups": groups if q.by else []})
    return out


async def _open_repeated(
    conn: asyncpg.Connection,
    tenant: str,
    q: FcrQuery,
    policy: FcrPolicy,
) -> dict[str | None, list[int]]:
    """Per group, contacts still open but already repeated, per window (policy first): read
    from the quality rows of the days whose windows may still be open (few, or none)."""
    longest = max(
        [policy.default_us, *(parse_window(o.window) for o in policy.overrides)]
        + [us for _, us in q.windows]
    )
    first_open = date(1970, 1, 1) + timedelta(days=(q.as_of_us - longest) // rules.DAY_US)
    start = max(q.start, first_open)
    if start >= q.end:
        return {}
    sub = FcrQuery(start, q.end, q.as_of_us, q.by, q.windows, q.segment)
    body = await report(conn, tenant, sub, policy)
    out: dict[str | None, list[int]] = {}
    for group in [body["total"], *body["groups"]]:
        key = None if group is body["total"] else group["key"]
        out[key] = [w["already_repeated"] for w in group["windows"]]
    return out
