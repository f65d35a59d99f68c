"""Conformance counts: each designed journey's figures per day (and month) of the journeys'
start, over the map's segment rows, kept exact as journeys and designs change.

What is stored (``journey.conformance_day``, one row per design, grain, period and stat, a
vector over ``journey.map_segment`` positions, [1] = all journeys): ``n`` journeys judged (in
scope), ``out`` out of scope, ``ok`` fully conforming, ``f:<fitness>`` journeys per exact fitness
value (so mean, min, median and histogram are exact), ``d:<kind>:<step>`` journeys with a
deviation, ``o:<kind>:<step>`` its occurrences. ``journey.conformance_state`` says which design
version (and, for stage designs, which stage mapping: ``fingerprint``) and journey kind they were
counted for.

When they change:

- **journeys** (the map compactor, ``maps/maintain.py``: ``Writes``, same transaction):
  every journey a batch saves or deletes is judged against each counted design of its tenant,
  its old row subtracted and its new row added (``Counting``);
- **a design** is created or changed (``PUT /v1/designed-journeys/{name}``): its counts are
  recomputed from ``journey.map_journey`` in the request's transaction, holding the tenant's map
  lock so no compaction of the tenant interleaves (``recount``);
- **a rebuild** (``waypoint rebuild-maps``, a new episode window or tenure bands) clears the
  tenant's counts and marks every design counted for the current version (``reset_tenant``);
  the rebuild's own journey writes then add every journey back.

A read uses the counts only when the state matches the design and the tenant's stage mapping
(``read`` returns None otherwise, and the caller computes from the journeys): a design saved
before the counts existed, a stage design after its stage mapping changed, a journey kind other
than the design's, two or more segment filters, or ``by=`` with a segment filter.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import asyncpg

from services.journey.conformance import rules
from services.journey.conformance.repository import design_of
from services.journey.conformance.schemas import DesignedJourneyPublic
from services.journey.maps import activities
from services.journey.maps import repository as maps_repo
from services.journey.maps import rules as map_rules
from services.journey.maps.schemas import MapQuery
from services.journey.maps.service import period_bounds
from services.journey.maps.settings import MapConfig

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
SEG_COLUMNS = ", ".join(map_rules.SEGMENTS)


class Judge:
    """Paths mapped to the design's granularity and judged, alignments cached per path."""

    def __init__(self, design: DesignedJourneyPublic, config: MapConfig):
        d = design.definition
        self.model = d.model()
        self.scope = d.scope.value
        self.f = activities.mapper(d.granularity.value, config.stages)
        self.timed = any(s.max_wait_us is not None for s in self.model)
        self._paths: dict[tuple[str, ...], tuple[tuple[str, ...], rules.Alignment | None]] = {}

    def aligned(self, stored: Iterable[str]) -> tuple[tuple[str, ...], rules.Alignment | None]:
        """The path at the design's granularity and its alignment (None: out of scope)."""
        key = tuple(stored)
        found = self._paths.get(key)
        if found is None:
            path = tuple(self.f(a) for a in key)
            alignment = (
                rules.align(path, self.model)
                if rules.in_scope(path, self.model, self.scope)
                else None
            )
            found = self._paths[key] = (path, alignment)
        return found

    def __call__(
        self, stored: Iterable[str], times_us: Sequence[int]
    ) -> tuple[tuple[str, ...], rules.Verdict | None]:
        path, alignment = self.aligned(stored)
        if alignment is None:
            return path, None
        deviations = alignment.deviations
        if self.timed:
            deviations += tuple(rules.too_slow(alignment, self.model, times_us))
        return path, rules.Verdict(alignment.fitness, deviations)


def kind_of(design: DesignedJourneyPublic) -> int:
    return map_rules.JOURNEYS[design.definition.journey.value]


def fingerprint(design: DesignedJourneyPublic, config: MapConfig) -> str:
    """What the counts depend on besides the journeys: the definition (its version) and, for a
    stage design, the tenant's stage mapping."""
    d = design.definition
    parts = [str(design.version), d.model_dump_json()]
    if d.granularity.value == "stage":
        parts.append(config.model_dump_json(include={"stages"}))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def stats_of(verdict: rules.Verdict | None) -> list[tuple[str, int]]:
    """The stats one journey adds (name, amount)."""
    if verdict is None:
        return [("out", 1)]
    out = [("n", 1), (f"f:{verdict.fitness!r}", 1)]
    if verdict.conforms:
        out.append(("ok", 1))
        return out
    for (kind, step), c in Counter(verdict.deviations).items():
        out.append((f"d:{kind}:{step}", 1))
        out.append((f"o:{kind}:{step}", c))
    return out


def _literal(vector: list[int]) -> str:
    return "{" + ",".join(map(str, vector)) + "}"


class Delta:
    """Changes to the counts, collected per (tenant, design, day, segment, verdict) and written
    once, rows in key order (two compactions never wait on each other in a cycle)."""

    def __init__(self) -> None:
        self.verdicts: Counter[tuple[str, str, int, map_rules.SegValues, rules.Verdict | None]] = (
            Counter()
        )

    def add(
        self,
        tenant: str,
        name: str,
        day: int,
        values: map_rules.SegValues,
        verdict: rules.Verdict | None,
        n: int,
    ) -> None:
        self.verdicts[(tenant, name, day, values, verdict)] += n

    async def apply(self, conn: asyncpg.Connection) -> int:
        cells: dict[tuple[str, str, str, date, str], dict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        for (tenant, name, day, values, verdict), n in self.verdicts.items():
            if not n:
                continue
            segs = map_rules.seg_keys(values)
            periods = (("d", maps_repo._date(day)), ("m", maps_repo._month(day)))
            for stat, c in stats_of(verdict):
                for grain, period in periods:
                    cell = cells[(tenant, name, grain, period, stat)]
                    for seg in segs:
                        cell[seg] += n * c
        rows: list[tuple[str, str, str, date, str, str, int]] = []
        positions: dict[str, dict[str, int]] = {}
        for tenant in sorted({k[0] for k in cells}):
            names = {s for k, v in cells.items() if k[0] == tenant for s in v}
            positions[tenant] = await maps_repo.segment_index(conn, tenant, names)
        for key, vec in cells.items():
            if not any(vec.values()):
                continue
            pos = positions[key[0]]
            dense = [0] * (1 + max(pos[s] for s in vec))
            for seg, v in vec.items():
                dense[pos[seg]] = v
            rows.append((*key, _literal(dense), dense[0]))
        rows.sort()
        if not rows:
            return 0
        cols: list[Any] = list(zip(*rows, strict=True))
        await conn.execute(
            """INSERT INTO journey.conformance_day AS c (tenant_id, name, grain, period, stat, v)
               SELECT u.t, u.n, u.g, u.p, u.s, u.v::bigint[]
               FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[],
                           $6::text[]) AS u(t, n, g, p, s, v)
               ON CONFLICT (tenant_id, name, grain, period, stat)
               DO UPDATE SET v = journey.vec_add(c.v, excluded.v)""",
            *cols[:6],
        )
        falling = [row for row in rows if row[6] < 0]
        if falling:
            cols = list(zip(*falling, strict=True))
            await conn.execute(
                """DELETE FROM journey.conformance_day c
                   USING unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[])
                       AS u(t, n, g, p, s)
                   WHERE c.tenant_id = u.t AND c.name = u.n AND c.grain = u.g
                     AND c.period = u.p AND c.stat = u.s AND c.v[1] = 0""",
                *cols[:5],
            )
        return len(rows)


# --- kept by the compactor ----------------------------------------------------------------------

JourneyChange = tuple[str, int, map_rules.JourneyRow | None, map_rules.JourneyRow | None]
# (tenant, journey kind, old row or None, new row or None) of one journey a batch changed


class Counting:
    """Journeys a compaction batch changed, judged against the counted designs of their tenants
    as the batch goes (part by part: the rows themselves are not kept) into one ``Delta``,
    written once at the end. Each tenant's designs are loaded on first use."""

    def __init__(self) -> None:
        self.delta = Delta()
        self._judges: dict[tuple[str, int], list[tuple[str, Judge]]] = defaultdict(list)
        self._loaded: set[str] = set()

    async def judge(self, conn: asyncpg.Connection, changed: Sequence[JourneyChange]) -> None:
        """Old verdicts out, new ones in."""
        if not changed:
            return
        await self._load(conn, {c[0] for c in changed} - self._loaded)
        for tenant, kind, old, new in changed:
            for name, judge in self._judges.get((tenant, kind), ()):
                for row, sign in ((old, -1), (new, 1)):
                    if row is not None:
                        self.delta.add(tenant, name, row[0], row[4], judge(row[2], row[3])[1], sign)

    async def apply(self, conn: asyncpg.Connection) -> int:
        return await self.delta.apply(conn)

    async def _load(self, conn: asyncpg.Connection, tenants: set[str]) -> None:
        if not tenants:
            return
        self._loaded |= tenants
        found = await conn.fetch(
            """SELECT d.tenant_id, d.name, d.version, d.updated_at, d.definition::text, s.kind,
                      s.fingerprint
               FROM journey.designed_journey d
               JOIN journey.conformance_state s ON s.tenant_id = d.tenant_id AND s.name = d.name
               WHERE d.tenant_id = ANY($1::text[]) AND s.version = d.version""",
            sorted(tenants),
        )
        if not found:
            return
        configs = await maps_repo.configs(conn, {r["tenant_id"] for r in found})
        for row in found:
            tenant, design = row["tenant_id"], design_of(row)
            if fingerprint(design, configs[tenant]) == row["fingerprint"]:  # else: not counted
                self._judges[(tenant, row["kind"])].append(
                    (design.name, Judge(design, configs[tenant]))
                )


# --- recomputed when a design changes, reset by a rebuild ----------------------------------------


async def _set_state(
    conn: asyncpg.Connection, tenant: str, design: DesignedJourneyPublic, config: MapConfig
) -> None:
    await conn.execute(
        """INSERT INTO journey.conformance_state (tenant_id, name, version, kind, fingerprint)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (tenant_id, name) DO UPDATE SET version = excluded.version,
               kind = excluded.kind, fingerprint = excluded.fingerprint, counted_at = now()""",
        tenant,
        design.name,
        design.version,
        kind_of(design),
        fingerprint(design, config),
    )


async def is_counted(
    conn: asyncpg.Connection, tenant: str, design: DesignedJourneyPublic, config: MapConfig
) -> bool:
    row = await conn.fetchrow(
        """SELECT version, kind, fingerprint FROM journey.conformance_state
           WHERE tenant_id = $1 AND name = $2""",
        tenant,
        design.name,
    )
    return (
        row is not None
        and row["version"] == design.version
        and row["kind"] == kind_of(design)
        and row["fingerprint"] == fingerprint(design, config)
    )


async def recount(
    conn: asyncpg.Connection, tenant: str, design: DesignedJourneyPublic, config: MapConfig
) -> int:
    """The design's counts from every stored journey of its kind (in the caller's transaction,
    the tenant's map lock held: compaction of the tenant waits for the commit, so no journey
    change is judged against the old version and missed by this one). Returns journeys read."""
    await maps_repo.lock_tenant(conn, tenant)
    await conn.execute(
        "DELETE FROM journey.conformance_day WHERE tenant_id = $1 AND name = $2",
        tenant,
        design.name,
    )
    await _set_state(conn, tenant, design, config)
    judge = Judge(design, config)
    delta = Delta()
    seen = 0
    if judge.timed:  # each journey's step times matter
        query = f"""SELECT day, activities, times_us, {SEG_COLUMNS}, 1 AS n
                    FROM journey.map_journey WHERE tenant_id = $1 AND kind = $2"""  # noqa: S608
    else:  # counted per path, day and segment in PostgreSQL
        query = f"""SELECT day, activities, NULL::bigint[] AS times_us, {SEG_COLUMNS},
                           count(*) AS n
                    FROM journey.map_journey WHERE tenant_id = $1 AND kind = $2
                    GROUP BY day, activities, {SEG_COLUMNS}"""  # noqa: S608
    width = len(map_rules.SEGMENTS)
    # (the caller's transaction is open: the lock above needs it, and so does a cursor)
    async for row in conn.cursor(query, tenant, kind_of(design), prefetch=5000):
        _path, verdict = judge(row[1], row[2] or ())
        day = row[0].toordinal() - _EPOCH_ORDINAL
        delta.add(tenant, design.name, day, tuple(row[3 : 3 + width]), verdict, row["n"])
        seen += row["n"]
    await delta.apply(conn)
    return seen


async def reset_tenant(conn: asyncpg.Connection, tenant: str, config: MapConfig) -> None:
    """For a rebuild of the tenant's journeys (its map lock held): no counts, every design
    marked counted for its current version; the rebuild's journey writes add them back."""
    await conn.execute("DELETE FROM journey.conformance_day WHERE tenant_id = $1", tenant)
    rows = await conn.fetch(
        """SELECT name, version, updated_at, definition::text FROM journey.designed_journey
           WHERE tenant_id = $1 ORDER BY name""",
        tenant,
    )
    for row in rows:
        await _set_state(conn, tenant, design_of(row), config)


# --- read --------------------------------------------------------------------------------------


def _ranged() -> str:
    branches = [
        f"""SELECT stat, v FROM journey.conformance_day
            WHERE tenant_id = $1 AND name = $2 AND grain = '{grain}'
              AND period >= ${lo} AND period < ${lo + 1}"""
        for grain, lo in (("m", 3), ("d", 5), ("d", 7))
    ]
    return "\n UNION ALL \n".join(branches)


_READ = f"""SELECT r.stat, i, sum(r.v[i])::bigint FROM ({_ranged()}) r
            CROSS JOIN unnest($9::int[]) AS i GROUP BY r.stat, i"""


def answerable(q: MapQuery, by: str | None) -> bool:
    """Whether the counts can answer the query's filters (else: computed from the journeys)."""
    return len(q.segment) <= 1 and not (by is not None and q.segment)


async def read(
    conn: asyncpg.Connection,
    tenant: str,
    design: DesignedJourneyPublic,
    config: MapConfig,
    q: MapQuery,
    by: str | None,
) -> dict[str | None, dict[str, int]] | None:
    """Stats summed over the query's range: per group (None: all the query's journeys; else a
    value of ``by``). None when the counts cannot answer exactly (not counted for this design
    version, another journey kind, filters the segment vectors do not hold)."""
    if not answerable(q, by) or q.kind != kind_of(design):
        return None
    if not await is_counted(conn, tenant, design, config):
        return None
    positions = await maps_repo.segments_of(conn, tenant)
    wanted: dict[int, str | None] = {}  # 1-based vector position -> group
    if q.segment:
        ((trait, value),) = q.segment.items()
        idx = positions.get(f"{trait}={value}")
        if idx is None:
            return {None: {}}
        wanted[idx + 1] = None
    else:
        wanted[1] = None
        if by is not None:
            prefix = f"{by}="
            for seg, idx in positions.items():
                if seg.startswith(prefix):
                    wanted[idx + 1] = seg[len(prefix) :]
    bounds = period_bounds(q.start, q.end)
    out: dict[str | None, dict[str, int]] = {None: {}}
    for stat, i, n in await conn.fetch(_READ, tenant, design.name, *bounds, list(wanted)):
        if n:
            out.setdefault(wanted[i], {})[stat] = n
    return out
