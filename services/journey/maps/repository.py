"""SQL of the journey map (asyncpg, inside the caller's transaction; never commits).

Every statement filters on the tenant. Batched statements take parallel arrays and ``unnest``
them, so a compaction of hundreds of customers costs a fixed handful of round trips.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import asyncpg
import orjson

from services.journey.maps import rules
from services.journey.maps.settings import MapConfig
from services.journey.quality.rules import QRow
from shared.db import stage_rows
from shared.events import Envelope

Key = tuple[str, uuid.UUID]  # (tenant, customer)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _date(day: int) -> date:
    return date.fromordinal(day + _EPOCH_ORDINAL)


def _split(keys: Sequence[Key]) -> tuple[list[str], list[uuid.UUID]]:
    return [k[0] for k in keys], [k[1] for k in keys]


def _vector(values: list[int]) -> str:
    """A ``bigint[]`` as its array literal, staged as text and cast by the statement that reads
    it: asyncpg's binary array encoding checks every element against three ABCs (~0.2 us
    each), which was ~40 % of the client's COPY time of an aggregate row (two vectors over the
    tenant's segments). The list's own ``repr`` (``[1, 0, 3]`` → ``{1, 0, 3}``: PostgreSQL
    allows the spaces) takes 0.4–0.7 of the time of joining the digits."""
    return "{" + repr(values)[1:-1] + "}"


# --- the pending queue --------------------------------------------------------------------------


_PENDING_COLUMNS = ("tenant_id", "customer_id", "event_id", "type", "time_us", "body")


async def enqueue_events(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, uuid.UUID, Envelope, str]]
) -> None:
    """(tenant, customer, event, its JSON) of newly applied events (the worker's chunk): one
    COPY (an ``unnest`` of six arrays checked and encoded every element on the Python side)."""
    if rows:
        await conn.copy_records_to_table(
            "map_pending",
            schema_name="journey",
            columns=_PENDING_COLUMNS,
            records=[
                (r[0], r[1], r[2].id, str(r[2].type), rules.to_us(r[2].time), r[3]) for r in rows
            ],
        )


async def forget_events(conn: asyncpg.Connection, tenant: str, event_ids: Sequence[str]) -> None:
    """Drop queued entries of events a split moved to another customer (whose re-derivation,
    queued by the same split, reads them)."""
    if event_ids:
        await conn.execute(
            "DELETE FROM journey.map_pending WHERE tenant_id = $1 AND event_id = ANY($2::text[])",
            tenant,
            list(event_ids),
        )


async def enqueue_customers(
    conn: asyncpg.Connection, tenant: str, customer_ids: Iterable[uuid.UUID]
) -> None:
    """Re-derive these customers from all their events (after a merge or a split)."""
    ids = list(customer_ids)
    await conn.execute(
        """INSERT INTO journey.map_pending (tenant_id, customer_id)
           SELECT $1, id FROM unnest($2::uuid[]) AS id""",
        tenant,
        ids,
    )


# Queue entries looked at per customer a claim may take: a live customer's burst is ~10-12
# events, so a window of 4 per customer filled a 500-customer batch only a third (one batch's
# writes coalesce across its customers: fewer, fuller batches upsert fewer rows per event).
_ENTRIES_PER_CUSTOMER = 16


# the batch before's customers, left out of a claim's candidates (a hashed subplan: one probe per
# entry; by id alone: another tenant's customer with the same random UUID would wait one batch)
_NOT_BUSY = "WHERE customer_id NOT IN (SELECT unnest($3::uuid[]))"


async def claim(
    conn: asyncpg.Connection,
    limit: int,
    *,
    settle: float = 0.0,
    cap: float = 0.0,
    busy: Sequence[uuid.UUID] = (),
) -> list[Key]:
    """The customers waiting longest, locked for this transaction (others' locks are skipped;
    a tenant being recomputed holds its lock exclusively and is skipped whole). ``busy``: the
    customers of the batch before, still being committed: their entries are left out of the
    candidates (their locks would skip them anyway, but they would fill the window).

    ``settle`` > 0: only customers whose newest entry is at least ``settle`` seconds old (their
    burst of events is folded in one visit), or whose oldest has waited ``cap`` seconds or more
    (a steady stream is never starved). The candidates are still the oldest entries (primary key
    order); the check is one probe of the customer index per candidate customer."""
    if settle <= 0:
        rows = await conn.fetch(
            f"""SELECT tenant_id, customer_id FROM (
                   SELECT tenant_id, customer_id, seq FROM journey.map_pending
                   {_NOT_BUSY} ORDER BY seq LIMIT $1) p
               GROUP BY tenant_id, customer_id ORDER BY min(seq) LIMIT $2""",
            limit * _ENTRIES_PER_CUSTOMER,
            limit,
            list(busy),
        )
    else:
        rows = await conn.fetch(
            f"""SELECT p.tenant_id, p.customer_id FROM (
                   SELECT tenant_id, customer_id, min(seq) AS first, min(enqueued_at) AS oldest
                   FROM (SELECT tenant_id, customer_id, seq, enqueued_at
                         FROM journey.map_pending {_NOT_BUSY} ORDER BY seq LIMIT $1) h
                   GROUP BY tenant_id, customer_id) p
               CROSS JOIN LATERAL (
                   SELECT max(q.enqueued_at) AS newest FROM journey.map_pending q
                   WHERE q.tenant_id = p.tenant_id AND q.customer_id = p.customer_id) n
               WHERE p.oldest <= now() - make_interval(secs => $5)
                  OR n.newest <= now() - make_interval(secs => $4)
               ORDER BY p.first LIMIT $2""",
            limit * _ENTRIES_PER_CUSTOMER,
            limit,
            list(busy),
            settle,
            max(cap, settle),
        )
    if not rows:
        return []
    locked = await conn.fetch(
        """SELECT u.t, u.c FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS u(t, c, o)
           WHERE pg_try_advisory_xact_lock_shared(hashtextextended('waypoint-map|' || u.t, 0))
             AND pg_try_advisory_xact_lock(
                 hashtextextended('waypoint-map|' || u.t || '|' || u.c::text, 0))
           ORDER BY u.o""",
        [r[0] for r in rows],
        [r[1] for r in rows],
    )
    return [(r[0], r[1]) for r in locked]


async def sizes(conn: asyncpg.Connection, keys: Sequence[Key]) -> list[int]:
    """Each customer's stored steps plus queued events, in the order of ``keys``: what folding
    it holds in memory."""
    tenants, customers = _split(keys)
    rows = await conn.fetch(
        """SELECT coalesce(x.steps, 0) + (
                   SELECT count(*) FROM journey.map_pending p
                   WHERE p.tenant_id = u.t AND p.customer_id = u.c)
           FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS u(t, c, o)
           LEFT JOIN journey.map_customer x ON x.tenant_id = u.t AND x.customer_id = u.c
           ORDER BY u.o""",
        tenants,
        customers,
    )
    return [r[0] for r in rows]


async def lock_tenant(conn: asyncpg.Connection, tenant: str) -> None:
    """Exclusive: no compaction of this tenant runs until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('waypoint-map|' || $1, 0))", tenant
    )


async def pending_of(conn: asyncpg.Connection, keys: Sequence[Key]) -> list[asyncpg.Record]:
    tenants, customers = _split(keys)
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT p.seq, p.tenant_id, p.customer_id, p.event_id, p.type, p.time_us, p.body,
                  p.enqueued_at
           FROM unnest($1::text[], $2::uuid[]) AS u(t, c)
           JOIN journey.map_pending p ON p.tenant_id = u.t AND p.customer_id = u.c""",
        tenants,
        customers,
    )
    return rows


async def done(
    conn: asyncpg.Connection, seqs: Sequence[int], folded: Sequence[tuple[str, uuid.UUID, str]]
) -> None:
    """Remove processed entries: by sequence number, and those of events a re-derivation read."""
    await conn.execute(
        """DELETE FROM journey.map_pending p
           WHERE p.seq = ANY($1::bigint[])""",
        list(seqs),
    )
    if folded:
        await conn.execute(
            """DELETE FROM journey.map_pending p
               USING unnest($1::text[], $2::uuid[], $3::text[]) AS u(t, c, e)
               WHERE p.tenant_id = u.t AND p.customer_id = u.c AND p.event_id = u.e""",
            [f[0] for f in folded],
            [f[1] for f in folded],
            [f[2] for f in folded],
        )


async def done_events(conn: asyncpg.Connection, tenant: str, event_ids: Sequence[str]) -> None:
    """Remove the queue entries of events a rebuild has read (whichever customer they name)."""
    if event_ids:
        await conn.execute(
            """DELETE FROM journey.map_pending
               WHERE tenant_id = $1 AND event_id = ANY($2::text[])""",
            tenant,
            list(event_ids),
        )


async def mapped_after(
    conn: asyncpg.Connection, tenant: str, after: uuid.UUID, limit: int
) -> list[uuid.UUID]:
    """Customers with a stored map profile, in id order after ``after``."""
    rows = await conn.fetch(
        """SELECT customer_id FROM journey.map_customer WHERE tenant_id = $1 AND customer_id > $2
           ORDER BY customer_id LIMIT $3""",
        tenant,
        after,
        limit,
    )
    return [r[0] for r in rows]


async def table_sizes(conn: asyncpg.Connection) -> list[tuple[str, float]]:
    rows = await conn.fetch(
        """SELECT c.relname, greatest(c.reltuples, 0) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'journey' AND c.relname IN ('map_node', 'map_edge', 'map_step')"""
    )
    return [(r[0], float(r[1])) for r in rows]


async def oldest_pending_at(conn: asyncpg.Connection) -> Any:
    return await conn.fetchval("SELECT enqueued_at FROM journey.map_pending ORDER BY seq LIMIT 1")


# --- customers and events ---------------------------------------------------------------------


async def roots(conn: asyncpg.Connection, keys: Sequence[Key]) -> dict[Key, uuid.UUID]:
    """Each customer's surviving customer (itself when active); missing ones are left out."""
    tenants, customers = _split(keys)
    rows = await conn.fetch(
        """SELECT c.tenant_id, c.id, coalesce(c.merged_into, c.id)
           FROM unnest($1::text[], $2::uuid[]) AS u(t, c)
           JOIN journey.customer c ON c.tenant_id = u.t AND c.id = u.c""",
        tenants,
        customers,
    )
    return {(r[0], r[1]): r[2] for r in rows}


def _fact(row: asyncpg.Record) -> rules.Fact:
    return rules.Fact(row[0], row[1], rules.to_us(row[2]), orjson.loads(row[3]))


async def member_facts(
    conn: asyncpg.Connection, keys: Sequence[Key]
) -> dict[Key, list[rules.Fact]]:
    """All events of each customer and of every customer merged into it."""
    tenants, customers = _split(keys)
    rows = await conn.fetch(
        """WITH wanted AS (SELECT * FROM unnest($1::text[], $2::uuid[]) AS u(t, c)),
           members AS (
               SELECT t, c, c AS m FROM wanted
               UNION ALL
               SELECT w.t, w.c, x.id FROM wanted w
               JOIN journey.customer x ON x.tenant_id = w.t AND x.merged_into = w.c)
           SELECT e.event_id, e.type, e.time, (e.envelope -> 'data')::text, m.t, m.c
           FROM members m
           JOIN journey.event e ON e.tenant_id = m.t AND e.customer_id = m.m""",
        tenants,
        customers,
    )
    out: dict[Key, list[rules.Fact]] = {k: [] for k in keys}
    for r in rows:
        out[(r[4], r[5])].append(_fact(r))
    return out


# --- the step log and profiles ------------------------------------------------------------------


async def steps_of(
    conn: asyncpg.Connection, keys: Sequence[Key]
) -> dict[Key, dict[str, rules.Step]]:
    tenants, customers = _split(keys)
    rows = await conn.fetch(
        """SELECT s.tenant_id, s.customer_id, s.step_key, s.summary::text
           FROM unnest($1::text[], $2::uuid[]) AS u(t, c)
           JOIN journey.map_step s ON s.tenant_id = u.t AND s.customer_id = u.c""",
        tenants,
        customers,
    )
    out: dict[Key, dict[str, rules.Step]] = {k: {} for k in keys}
    for r in rows:
        out[(r[0], r[1])][r[2]] = orjson.loads(r[3])
    return out


async def profiles_of(conn: asyncpg.Connection, keys: Sequence[Key]) -> dict[Key, rules.Profile]:
    tenants, customers = _split(keys)
    rows = await conn.fetch(
        """SELECT x.tenant_id, x.customer_id, x.profile::text
           FROM unnest($1::text[], $2::uuid[]) AS u(t, c)
           JOIN journey.map_customer x ON x.tenant_id = u.t AND x.customer_id = u.c""",
        tenants,
        customers,
    )
    return {(r[0], r[1]): orjson.loads(r[2]) for r in rows}


StepRow = tuple[str, uuid.UUID, rules.Step, QRow | None]
# (tenant, customer, the step's summary, its quality facts: None only for a step whose
# customer has no profile, which the compactor never saves)

_STEP_COLUMNS = (
    "tenant_id text, customer_id uuid, step_key text, activity text, summary text, "
    "at_us bigint, day date, prev_activity text, channel text, contact bool, reason text, "
    "team text, age_group text, region text, tier text, lifecycle_stage text, tenure text, "
    "resolved bool, transfers int, abandon_at text, abandon_wait_ms bigint, queue_wait_ms bigint, "
    "sentiment_milli int, callback int2, next_any_us bigint, next_same_us bigint, "
    "reopen_us bigint, episode text, episode_end bool, cross_unresolved bool"
)
_STEP_NAMES = [c.split()[0] for c in _STEP_COLUMNS.split(", ")]
_NO_QUALITY = (None,) * (len(_STEP_NAMES) - 5)
_INSERT_STEPS = f"""
    INSERT INTO journey.map_step AS s ({", ".join(_STEP_NAMES)})
    SELECT {", ".join(f"u.{n}" for n in _STEP_NAMES)} FROM map_step_stage AS u"""  # noqa: S608
# a step already stored (the compactor read it): its row updated in place
_UPDATE_STEPS = f"""{_INSERT_STEPS}
    ON CONFLICT (tenant_id, customer_id, step_key)
    DO UPDATE SET {", ".join(f"{n} = excluded.{n}" for n in _STEP_NAMES[3:])}"""


def _step_record(t: str, c: uuid.UUID, s: rules.Step, r: QRow | None) -> tuple[Any, ...]:
    summary = orjson.dumps(s, option=orjson.OPT_SORT_KEYS).decode()  # one text per summary
    if r is None:
        return (t, c, s["k"], rules.activity_of(s), summary, *_NO_QUALITY)
    return (
        t, c, s["k"], r.activity, summary, r.at_us, _date(r.at_us // rules.DAY_US),
        r.prev_activity, r.channel, r.contact, r.reason, r.team, *r.segment, r.resolved,
        r.transfers, r.abandon_at, r.abandon_wait_ms, r.queue_wait_ms, r.sentiment_milli,
        r.callback, r.next_any_us, r.next_same_us, r.reopen_us, r.episode, r.episode_end,
        r.cross_unresolved,
    )  # fmt: skip


async def save_steps(
    conn: asyncpg.Connection, rows: Sequence[StepRow], *, new: bool = False
) -> None:
    """The step log's rows, each with its quality facts (one row per step: the summary the
    compactor folds into, and the columns journey quality reads): one staged upsert.
    ``new=True`` when none of these steps is stored (the caller read its customers' steps
    under their lock, or cleared them): one COPY straight into the table then, without the
    upsert's conflict check nor the stage; a step stored after all fails the batch."""
    if not rows:
        return
    records = [_step_record(*r) for r in rows]
    if new:
        await conn.copy_records_to_table(
            "map_step", schema_name="journey", columns=_STEP_NAMES, records=records
        )
        return
    await stage_rows(conn, "map_step_stage", _STEP_COLUMNS, records)
    await conn.execute(_UPDATE_STEPS)


async def delete_steps(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, uuid.UUID, str]]
) -> None:
    if rows:
        await conn.execute(
            """DELETE FROM journey.map_step s
               USING unnest($1::text[], $2::uuid[], $3::text[]) AS u(t, c, k)
               WHERE s.tenant_id = u.t AND s.customer_id = u.c AND s.step_key = u.k""",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
        )


async def save_profiles(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, uuid.UUID, rules.Profile, int]]
) -> None:
    """(tenant, customer, profile, number of steps)."""
    if rows:
        await conn.execute(
            """INSERT INTO journey.map_customer AS x (tenant_id, customer_id, profile,
                   first_seen_at, steps)
               SELECT u.t, u.c, u.p::jsonb,
                      timestamptz 'epoch' + u.f * interval '1 microsecond', u.n
               FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::int[])
                   AS u(t, c, p, f, n)
               ON CONFLICT (tenant_id, customer_id) DO UPDATE SET profile = excluded.profile,
                   first_seen_at = excluded.first_seen_at, steps = excluded.steps,
                   updated_at = now()""",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [orjson.dumps(r[2]).decode() for r in rows],
            [r[2]["first"] for r in rows],
            [r[3] for r in rows],
        )


async def forget(conn: asyncpg.Connection, keys: Sequence[Key]) -> None:
    """Drop merged-away customers' steps, journeys and profile (their contribution is removed)."""
    if not keys:
        return
    tenants, customers = _split(keys)
    for table in ("map_step", "map_journey", "map_customer"):
        await conn.execute(
            f"""DELETE FROM journey.{table} x USING unnest($1::text[], $2::uuid[]) AS u(t, c)
                WHERE x.tenant_id = u.t AND x.customer_id = u.c""",  # noqa: S608 - fixed names
            tenants,
            customers,
        )


JourneyKey = tuple[str, uuid.UUID, int, str]  # tenant, customer, kind, journey key


_INSERT_JOURNEYS = """
    INSERT INTO journey.map_journey AS j (tenant_id, customer_id, kind, journey_key, day,
        start_at, steps, activities, times_us, age_group, region, tier, lifecycle_stage, tenure)
    SELECT u.t, u.c, u.k, u.j, u.d, timestamptz 'epoch' + u.s * interval '1 microsecond',
           u.n, u.a, u.us::bigint[], u.ag, u.r, u.ti, u.l, u.te
    FROM map_journey_stage AS u"""
_UPDATE_JOURNEYS = f"""{_INSERT_JOURNEYS}
    ON CONFLICT (tenant_id, customer_id, kind, journey_key) DO UPDATE SET
        day = excluded.day, start_at = excluded.start_at, steps = excluded.steps,
        activities = excluded.activities, times_us = excluded.times_us,
        age_group = excluded.age_group, region = excluded.region, tier = excluded.tier,
        lifecycle_stage = excluded.lifecycle_stage, tenure = excluded.tenure"""


async def save_journeys(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[JourneyKey, rules.JourneyRow]],
    *,
    new: bool = False,
) -> None:
    """One statement for the batch's journeys, staged by (binary) COPY. ``new=True`` when none
    of them is stored (as ``save_steps``): a plain insert. (A COPY straight into the table, as
    for new steps, costs as much: the arrays' client-side encoding takes what the backend
    saves.)"""
    if not rows:
        return
    await stage_rows(
        conn,
        "map_journey_stage",
        "t text, c uuid, k int2, j text, d date, s bigint, n int, a text[], us text, "
        "ag text, r text, ti text, l text, te text",
        [
            (
                *key,
                _date(day),
                times[0],
                steps,
                activities,
                _vector(list(times)),
                *segment,
            )
            for key, (day, steps, activities, times, segment) in sorted(rows, key=lambda r: r[0])
        ],  # fmt: skip
    )
    await conn.execute(_INSERT_JOURNEYS if new else _UPDATE_JOURNEYS)


async def delete_journeys(conn: asyncpg.Connection, keys: Sequence[JourneyKey]) -> None:
    if keys:
        await conn.execute(
            """DELETE FROM journey.map_journey j
               USING unnest($1::text[], $2::uuid[], $3::int2[], $4::text[]) AS u(t, c, kind, k)
               WHERE j.tenant_id = u.t AND j.customer_id = u.c AND j.kind = u.kind
                 AND j.journey_key = u.k""",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
        )


async def configs(conn: asyncpg.Connection, tenants: Iterable[str]) -> dict[str, MapConfig]:
    wanted = sorted(set(tenants))
    rows = await conn.fetch(
        "SELECT tenant_id, config::text FROM journey.map_config WHERE tenant_id = ANY($1::text[])",
        wanted,
    )
    found = {r[0]: MapConfig.model_validate_json(r[1]) for r in rows}
    return {t: found.get(t) or MapConfig() for t in wanted}


async def save_config(conn: asyncpg.Connection, tenant: str, config: MapConfig) -> None:
    await conn.execute(
        """INSERT INTO journey.map_config (tenant_id, config) VALUES ($1, $2::jsonb)
           ON CONFLICT (tenant_id) DO UPDATE SET config = excluded.config, updated_at = now()""",
        tenant,
        config.model_dump_json(),
    )


# --- aggregates -------------------------------------------------------------------------------


async def segment_index(
    conn: asyncpg.Connection, tenant: str, names: Iterable[str]
) -> dict[str, int]:
    """Vector positions (0-based; ``""`` all is 0) of segment rows, assigning new ones under
    the tenant's dictionary lock (taken only when a value is new: rare after warm-up)."""
    wanted = sorted(set(names) - {""})
    query = """SELECT segment, idx FROM journey.map_segment
               WHERE tenant_id = $1 AND segment = ANY($2::text[])"""
    found = {r[0]: r[1] for r in await conn.fetch(query, tenant, wanted)}
    missing = [n for n in wanted if n not in found]
    if missing:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('waypoint-map-segment|' || $1, 0))",
            tenant,
        )
        await conn.execute(
            """INSERT INTO journey.map_segment (tenant_id, segment, idx)
               SELECT $1, u.s, (SELECT coalesce(max(idx), 0) FROM journey.map_segment
                                WHERE tenant_id = $1) + u.o
               FROM unnest($2::text[]) WITH ORDINALITY AS u(s, o)
               ON CONFLICT (tenant_id, segment) DO NOTHING""",
            tenant,
            missing,
        )
        found = {r[0]: r[1] for r in await conn.fetch(query, tenant, wanted)}
    return {"": 0, **found}


async def segments_of(conn: asyncpg.Connection, tenant: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT segment, idx FROM journey.map_segment WHERE tenant_id = $1", tenant
    )
    return {"": 0, **{r[0]: r[1] for r in rows}}


def _add_into(target: list[int], vector: list[int]) -> None:
    if not target:  # a month's first day row (most of a replayed batch's)
        target.extend(vector)
        return
    if len(target) < len(vector):
        target.extend([0] * (len(vector) - len(target)))
    target[: len(vector)] = map(operator.add, target, vector)


def _month(day: int) -> date:
    return _date(day).replace(day=1)


async def apply_deltas(
    conn: asyncpg.Connection, tenant_deltas: Sequence[tuple[str, rules.Deltas]]
) -> tuple[int, int]:
    """Add the changes to the day rows and, summed per month, to the month rows, in key order
    (so two compactions never wait on each other in a cycle); then delete rows whose total
    reached zero. Nodes first, then edges; each is built from the collected changes as they
    are consumed (``Deltas.take_*``) and freed once written. Returns (rows upserted, rows
    deleted)."""
    ordered = sorted(tenant_deltas, key=lambda td: td[0])
    pos = {t: await segment_index(conn, t, d.segments()) for t, d in ordered}
    node_rows = _node_rows(ordered, pos)
    upserted, deleted = len(node_rows), 0
    if node_rows:
        await stage_rows(
            conn,
            "map_node_stage",
            "t text, k int2, g text, p date, a text, s text, v text",
            node_rows,
        )
        await conn.execute(
            """INSERT INTO journey.map_node AS n (tenant_id, kind, grain, period, activity,
                   stat, v)
               SELECT u.t, u.k, u.g, u.p, u.a, u.s, u.v::bigint[] FROM map_node_stage AS u
               ON CONFLICT (tenant_id, kind, grain, period, activity, stat)
               DO UPDATE SET v = journey.vec_add(n.v, excluded.v)"""
        )
        falling = [row for row in node_rows if row[6].startswith("{-")]  # all's count fell
        del node_rows
        if falling:
            cols: list[Any] = list(zip(*falling, strict=True))
            status = await conn.execute(
                """DELETE FROM journey.map_node n
                   USING unnest($1::text[], $2::int2[], $3::text[], $4::date[], $5::text[],
                                $6::text[]) AS u(t, k, g, p, a, s)
                   WHERE n.tenant_id = u.t AND n.kind = u.k AND n.grain = u.g
                     AND n.period = u.p AND n.activity = u.a AND n.stat = u.s AND n.v[1] = 0""",
                *cols[:6],
            )
            deleted += int(status.split()[-1])
    edge_rows = _edge_rows(ordered, pos)
    upserted += len(edge_rows)
    if edge_rows:
        await stage_rows(
            conn,
            "map_edge_stage",
            "t text, k int2, g text, p date, a text, b text, bk int2, n text, us text",
            edge_rows,
        )
        await conn.execute(
            """INSERT INTO journey.map_edge AS e (tenant_id, kind, grain, period, source,
                   target, bucket, n, us)
               SELECT u.t, u.k, u.g, u.p, u.a, u.b, u.bk, u.n::bigint[], u.us::bigint[]
               FROM map_edge_stage AS u
               ON CONFLICT (tenant_id, kind, grain, period, source, target, bucket)
               DO UPDATE SET n = journey.vec_add(e.n, excluded.n),
                             us = journey.vec_add(e.us, excluded.us)"""
        )
        dropping = [row for row in edge_rows if row[7].startswith("{-")]
        del edge_rows
        if dropping:
            cols = list(zip(*dropping, strict=True))
            status = await conn.execute(
                """DELETE FROM journey.map_edge e
                   USING unnest($1::text[], $2::int2[], $3::text[], $4::date[], $5::text[],
                                $6::text[], $7::int2[]) AS u(t, k, g, p, a, b, bk)
                   WHERE e.tenant_id = u.t AND e.kind = u.k AND e.grain = u.g
                     AND e.period = u.p AND e.source = u.a AND e.target = u.b
                     AND e.bucket = u.bk AND e.n[1] = 0""",
                *cols[:7],
            )
            deleted += int(status.split()[-1])
    return upserted, deleted


def _node_rows(
    tenant_deltas: Sequence[tuple[str, rules.Deltas]], pos: dict[str, dict[str, int]]
) -> list[tuple[Any, ...]]:
    """Day and month rows of the node changes, as dense segment vectors (``_vector``), in key
    order."""
    nodes: dict[tuple[Any, ...], list[int]] = {}
    periods = _Periods()
    for t, d in tenant_deltas:
        taken = d.take_nodes(pos[t])
        while taken:
            (kind, day, activity, stat), dense = taken.popitem()
            on, month = periods[day]
            nodes[(t, kind, "d", on, activity, stat)] = dense
            _add_into(nodes.setdefault((t, kind, "m", month, activity, stat), []), dense)
    rows = []
    while nodes:  # emptied as the rows are made: never both whole at once
        key, dense = nodes.popitem()
        if any(dense):
            rows.append((*key, _vector(dense)))
    rows.sort()
    return rows


def _edge_rows(
    tenant_deltas: Sequence[tuple[str, rules.Deltas]], pos: dict[str, dict[str, int]]
) -> list[tuple[Any, ...]]:
    """Day and month rows of the edge changes: count and µs vectors (``_vector``), in key
    order."""
    edges: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
    periods = _Periods()
    for t, d in tenant_deltas:
        taken = d.take_edges(pos[t])
        while taken:
            (kind, day, a, b, bk), (counts, sums) = taken.popitem()
            on, month = periods[day]
            edges[(t, kind, "d", on, a, b, bk)] = (counts, sums)
            mc, ms = edges.setdefault((t, kind, "m", month, a, b, bk), ([], []))
            _add_into(mc, counts)
            _add_into(ms, sums)
    rows = []
    while edges:  # emptied as the rows are made
        key, (counts, sums) = edges.popitem()
        if any(counts) or any(sums):
            rows.append((*key, _vector(counts), _vector(sums)))
    rows.sort()
    return rows


class _Periods(dict[int, tuple[date, date]]):
    """A day number's date and the first day of its month, each made once per batch."""

    def __missing__(self, day: int) -> tuple[date, date]:
        on = self[day] = (_date(day), _month(day))
        return on


async def clear_tenant(conn: asyncpg.Connection, tenant: str, *, steps: bool) -> None:
    """Delete the tenant's aggregates and journeys (and, with ``steps``, its step log, profiles
    and pending queue: a rebuild from events)."""
    tables = ["map_node", "map_edge", "map_journey", "quality_fcr_day"]
    tables += ["quality_pain_day", "quality_pain_example"]
    if steps:
        tables += ["map_step", "map_customer", "map_pending"]  # pending: all read below
    # (without: the steps' quality columns stay until the recomputation rewrites every step)
    for table in tables:
        await conn.execute(f"DELETE FROM journey.{table} WHERE tenant_id = $1", tenant)  # noqa: S608
