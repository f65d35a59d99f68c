"""SQL of journey quality (asyncpg, inside the caller's transaction; never commits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import asyncpg

from services.journey.quality.policy import FcrPolicy
from services.journey.quality.rules import (
    CALLBACK_MISSED,
    DAY_US,
    LADDER_DAYS,
    LONG_WAIT_MS,
    NEGATIVE_SENTIMENT_MILLI,
    ExampleCell,
    FcrCell,
    PainCell,
    QRow,
    examples,
)

_EPOCH = date(1970, 1, 1)


async def policy_of(conn: asyncpg.Connection, tenant: str) -> FcrPolicy:
    text = await conn.fetchval(
        "SELECT policy::text FROM journey.quality_fcr_policy WHERE tenant_id = $1", tenant
    )
    return FcrPolicy.model_validate_json(text) if text else FcrPolicy()


async def save_policy(conn: asyncpg.Connection, tenant: str, policy: FcrPolicy) -> None:
    await conn.execute(
        """INSERT INTO journey.quality_fcr_policy (tenant_id, policy) VALUES ($1, $2::jsonb)
           ON CONFLICT (tenant_id) DO UPDATE SET policy = excluded.policy, updated_at = now()""",
        tenant,
        policy.model_dump_json(),
    )


async def apply_fcr_deltas(
    conn: asyncpg.Connection, deltas: Sequence[tuple[str, FcrCell, int]]
) -> None:
    """Add (tenant, cell, change) to the FCR day counts in key order (no deadlock cycles
    between compactions); drop counts that reached zero."""
    if not deltas:
        return
    rows = sorted(deltas, key=lambda d: (d[0], d[1][1], d[1][0], *d[1][2:]))
    cols: list[list[object]] = [[] for _ in range(9)]
    for tenant, (day, mode, reason, activity, team, declared, t), n in rows:
        values = (tenant, _EPOCH + timedelta(days=day), mode, reason, activity, team, declared,
                  t, n)  # fmt: skip
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    await conn.execute(
        """INSERT INTO journey.quality_fcr_day AS f (tenant_id, day, mode, reason, activity,
               team, declared, threshold, n)
           SELECT * FROM unnest($1::text[], $2::date[], $3::int2[], $4::text[], $5::text[],
                                $6::text[], $7::int2[], $8::int2[], $9::bigint[])
           ON CONFLICT (tenant_id, mode, day, reason, activity, team, declared, threshold)
           DO UPDATE SET n = f.n + excluded.n""",
        *cols,
    )
    if any(n < 0 for n in cols[8]):  # type: ignore[operator]
        await conn.execute(
            """DELETE FROM journey.quality_fcr_day f
               USING unnest($1::text[], $2::date[], $3::int2[], $4::text[], $5::text[],
                            $6::text[], $7::int2[], $8::int2[]) AS u(t, d, m, r, a, tm, dc, th)
               WHERE f.tenant_id = u.t AND f.mode = u.m AND f.day = u.d AND f.reason = u.r
                 AND f.activity = u.a AND f.team = u.tm AND f.declared = u.dc
                 AND f.threshold = u.th AND f.n = 0""",
            *cols[:8],
        )


async def apply_pain_deltas(
    conn: asyncpg.Connection, deltas: Sequence[tuple[str, PainCell, int]]
) -> None:
    """Add (tenant, cell, change) to the pain-point day counts in key order (as
    ``apply_fcr_deltas``); drop counts that reached zero."""
    if not deltas:
        return
    rows = sorted(deltas, key=lambda d: (d[0], *d[1]))
    cols: list[list[object]] = [[] for _ in range(9)]
    for tenant, (day, *rest), n in rows:
        for col, value in zip(cols, (tenant, _EPOCH + timedelta(days=day), *rest, n), strict=True):
            col.append(value)
    await conn.execute(
        """INSERT INTO journey.quality_pain_day AS f (tenant_id, day, activity, prev_activity,
               channel, contact, stat, value, n)
           SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[],
                                $6::bool[], $7::text[], $8::text[], $9::bigint[])
           ON CONFLICT (tenant_id, day, activity, prev_activity, channel, contact, stat, value)
           DO UPDATE SET n = f.n + excluded.n""",
        *cols,
    )
    if any(n < 0 for n in cols[8]):  # type: ignore[operator]
        await conn.execute(
            """DELETE FROM journey.quality_pain_day f
               USING unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[],
                            $6::bool[], $7::text[], $8::text[]) AS u(t, d, a, pa, ch, c, s, v)
               WHERE f.tenant_id = u.t AND f.day = u.d AND f.activity = u.a
                 AND f.prev_activity = u.pa AND f.channel = u.ch AND f.contact = u.c
                 AND f.stat = u.s AND f.value = u.v AND f.n = 0""",
            *cols[:8],
        )


ExampleKey = tuple[str, ExampleCell]  # tenant, (day, activity, channel, kind)
_QROW_COLUMNS = ", ".join(f for f in QRow._fields if f != "segment")


async def apply_examples(
    conn: asyncpg.Connection,
    added: dict[ExampleKey, str],
    withdrawn: Sequence[tuple[ExampleKey, str]],
) -> None:
    """Keep the pain-point examples (``journey.quality_pain_example``) the latest affected step
    of each cell, after the batch's quality rows are written: each cell takes the greater of
    its example and the batch's candidate; a cell whose example was withdrawn (its step changed
    or left the cell) is recomputed from the cell's day of quality rows, or dropped."""

    def order(key: ExampleKey) -> tuple[object, ...]:
        return (key[0], key[1][0], key[1][1], key[1][3])

    stale: list[tuple[str, date, str, str]] = []
    if withdrawn:
        # Lock every cell the batch touches, in key order (one statement: no lock cycles with
        # another compaction), and find those whose example is withdrawn and not outdone by
        # the batch's candidate: they are recomputed once the candidates are in.
        keys = sorted(set(added) | {k for k, _x in withdrawn}, key=order)
        current = await conn.fetch(
            """SELECT e.tenant_id, e.day, e.activity, e.kind, e.example
               FROM journey.quality_pain_example e
               JOIN unnest($1::text[], $2::date[], $3::text[], $4::text[]) AS u(t, d, a, k)
                 ON e.tenant_id = u.t AND e.day = u.d AND e.activity = u.a AND e.kind = u.k
               ORDER BY 1, 2, 3, 4
               FOR UPDATE OF e""",
            [t for t, _c in keys],
            [_EPOCH + timedelta(days=c[0]) for _t, c in keys],
            [c[1] for _t, c in keys],
            [c[3] for _t, c in keys],
        )
        now = {(r[0], r[1], r[2], r[3]): r[4] for r in current}
        seen: set[tuple[str, date, str, str]] = set()  # (a list search was quadratic)
        for (tenant, cell), old in sorted(set(withdrawn), key=lambda w: (order(w[0]), w[1])):
            at = (tenant, _EPOCH + timedelta(days=cell[0]), cell[1], cell[3])
            if now.get(at) == old and added.get((tenant, cell), "") < old and at not in seen:
                seen.add(at)
                stale.append(at)
    if added:
        items = sorted(added.items(), key=lambda kv: order(kv[0]))
        await conn.execute(
            """INSERT INTO journey.quality_pain_example AS e (tenant_id, day, activity, channel,
                   kind, example)
               SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[],
                                    $6::text[])
               ON CONFLICT (tenant_id, day, activity, kind)
               DO UPDATE SET example = greatest(e.example, excluded.example)""",
            [t for (t, _c), _x in items],
            [_EPOCH + timedelta(days=c[0]) for (_t, c), _x in items],
            [c[1] for (_t, c), _x in items],
            [c[2] for (_t, c), _x in items],
            [c[3] for (_t, c), _x in items],
            [x for _k, x in items],
        )
    if not stale:
        return
    days = sorted({(r[0], r[1], r[2]) for r in stale})
    rows = await conn.fetch(
        f"""SELECT q.tenant_id, q.customer_id::text, q.step_key, {_QROW_COLUMNS}
            FROM journey.map_step q
            JOIN unnest($1::text[], $2::date[], $3::text[]) AS u(t, d, a)
              ON q.tenant_id = u.t AND q.day = u.d AND q.activity = u.a""",  # noqa: S608 - fixed
        [d[0] for d in days],
        [d[1] for d in days],
        [d[2] for d in days],
    )
    found: dict[str, dict[ExampleCell, str]] = {}
    by_tenant: dict[str, list[tuple[str, str, QRow]]] = {}
    for r in rows:
        fields = dict(r.items())
        tenant, customer, key = (
            fields.pop("tenant_id"),
            fields.pop("customer_id"),
            fields.pop("step_key"),
        )
        by_tenant.setdefault(tenant, []).append((customer, key, QRow(segment=(), **fields)))
    for tenant, triples in by_tenant.items():
        found[tenant] = examples(triples)
    latest = {
        (t, day, activity, kind): text
        for t, cells in found.items()
        for (d, activity, _channel, kind), text in cells.items()
        for day in [_EPOCH + timedelta(days=d)]
    }
    keep = [(*r, latest[r]) for r in stale if r in latest]
    drop = [r for r in stale if r not in latest]
    if keep:
        await conn.execute(
            """UPDATE journey.quality_pain_example e SET example = u.x
               FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[])
                    AS u(t, d, a, k, x)
               WHERE e.tenant_id = u.t AND e.day = u.d AND e.activity = u.a AND e.kind = u.k""",
            *[list(col) for col in zip(*keep, strict=True)],
        )
    if drop:
        await conn.execute(
            """DELETE FROM journey.quality_pain_example e
               USING unnest($1::text[], $2::date[], $3::text[], $4::text[]) AS u(t, d, a, k)
               WHERE e.tenant_id = u.t AND e.day = u.d AND e.activity = u.a AND e.kind = u.k""",
            *[list(col) for col in zip(*drop, strict=True)],
        )


# The examples of every quality row of a tenant (``rules.examples`` in SQL): the bench's load
# and migration journey_0009 use it; a test checks it against the maintained table.
EXAMPLES_SQL = f"""
INSERT INTO journey.quality_pain_example (tenant_id, day, activity, channel, kind, example)
SELECT tenant_id, day, activity, min(channel), kind, max(x COLLATE "C")
FROM (
    SELECT q.tenant_id, q.day, q.activity, q.channel,
           lpad(q.at_us::text, 20, '0') || chr(31) || q.customer_id::text || chr(31) ||
           q.episode || chr(31) || q.step_key AS x,
           q.abandon_at, q.callback, q.cross_unresolved, q.transfers, q.sentiment_milli,
           q.queue_wait_ms, q.contact, q.reason, q.next_any_us, q.next_same_us, q.reopen_us
    FROM journey.map_step q WHERE {{where}}
) s CROSS JOIN LATERAL (
    SELECT 'abandon' WHERE s.abandon_at IS NOT NULL
    UNION ALL SELECT 'callback_not_completed' WHERE s.callback = {CALLBACK_MISSED}
    UNION ALL SELECT 'cross_channel_unresolved' WHERE s.cross_unresolved
    UNION ALL SELECT 'transfer_chain' WHERE s.transfers >= 2
    UNION ALL SELECT 'negative_sentiment' WHERE s.sentiment_milli <= {NEGATIVE_SENTIMENT_MILLI}
    UNION ALL SELECT 'long_wait' WHERE s.queue_wait_ms > {LONG_WAIT_MS}
    UNION ALL SELECT 'transfer' WHERE s.transfers >= 1
    UNION ALL
    SELECT 'r:' || m.mode || ':' || t.i || ':' || coalesce(s.reason, '')
    FROM (VALUES (0, s.next_any_us), (1, s.next_same_us),
                 (2, least(s.next_any_us, s.reopen_us)),
                 (3, least(s.next_same_us, s.reopen_us))) AS m(mode, gap)
    CROSS JOIN LATERAL (
        SELECT min(l.i - 1) AS i
        FROM unnest(ARRAY{list(LADDER_DAYS)}::bigint[]) WITH ORDINALITY AS l(d, i)
        WHERE m.gap <= l.d * {DAY_US}) t
    WHERE s.contact AND t.i IS NOT NULL
) AS k(kind)
GROUP BY tenant_id, day, activity, kind"""  # noqa: S608 - constants


async def fill_examples(conn: asyncpg.Connection, tenant: str) -> None:
    """A tenant's examples from its quality rows (its examples must be empty)."""
    await conn.execute(EXAMPLES_SQL.format(where="q.tenant_id = $1"), tenant)
