"""Read side of the journey map: aggregates in, views out.

Aggregates are stored at touchpoint granularity; channel and stage maps are computed here by
mapping activities (counts, starts, ends, duration sums and histograms add up under any mapping,
since which step directly follows which does not change). A ``from``/``to`` range reads whole
months from the month rows and the remaining days from the day rows. One segment filter reads
that segment's position of every vector; several at once are computed from the journeys table
(counts, starts, ends and durations; the per-step performance counters need a single filter).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg

from services.journey.maps import activities, histogram, rules
from services.journey.maps import repository as repo
from services.journey.maps.schemas import MapQuery, invalid
from services.journey.maps.settings import MapConfig

SEGMENT_COLUMNS = {name: name for name in rules.SEGMENTS}


@dataclass
class Edge:
    count: int = 0
    us: int = 0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, bucket: int, count: int, us: int) -> None:
        self.count += count
        self.us += us
        self.hist[bucket] = self.hist.get(bucket, 0) + count

    def merge(self, other: Edge) -> None:
        self.count += other.count
        self.us += other.us
        for b, n in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + n

    def durations(self) -> dict[str, float | None]:
        return {
            "mean": round(self.us / self.count / 1e6, 3) if self.count else None,
            "p50": _round(histogram.quantile_s(self.hist, 0.5)),
            "p90": _round(histogram.quantile_s(self.hist, 0.9)),
        }


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


@dataclass
class Loaded:
    """Aggregates at touchpoint level for one query."""

    nodes: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    edges: dict[tuple[str, str], Edge] = field(default_factory=lambda: defaultdict(Edge))
    stats: bool = True  # False: computed from journeys (no per-step counters)


def period_bounds(start: date | None, end: date | None) -> tuple[date, ...]:
    """(month lo, month hi, day lo, day hi, day lo 2, day hi 2): whole months in [from, to)
    from the month rows, the days before and after them from the day rows."""
    lo, hi = start or date.min, end or date.max
    if lo.day == 1:
        mlo = lo
    else:
        mlo = (lo.replace(day=28) + timedelta(days=4)).replace(day=1)
    mhi = hi if hi == date.max else hi.replace(day=1)
    if mlo < mhi:
        return mlo, mhi, lo, mlo, mhi, hi
    return date.max, date.max, lo, hi, hi, hi


def _ranged(table: str, columns: str) -> str:
    """Rows of ``table`` for the query's periods: month rows for whole months, day rows for
    the rest; each branch is one range of the primary key. Params: $1 tenant, $2 kind,
    $3..$8 ``period_bounds``."""
    branches = [
        f"""SELECT {columns} FROM journey.{table}
            WHERE tenant_id = $1 AND kind = $2 AND grain = '{grain}'
              AND period >= ${lo} AND period < ${lo + 1}"""
        for grain, lo in (("m", 3), ("d", 5), ("d", 7))
    ]
    return "\n UNION ALL \n".join(branches)


_NODES = f"""SELECT activity, stat, sum(x)::bigint FROM (
    {_ranged("map_node", "activity, stat, v[$9] AS x")}) r GROUP BY activity, stat"""
_EDGES = f"""SELECT source, target, bucket, sum(x)::bigint, sum(y)::bigint FROM (
    {_ranged("map_edge", "source, target, bucket, n[$9] AS x, us[$9] AS y")}) r
    GROUP BY source, target, bucket"""


async def load(conn: asyncpg.Connection, tenant: str, q: MapQuery) -> Loaded:
    if len(q.segment) > 1:
        return await load_from_journeys(conn, tenant, q)
    out = Loaded()
    position = 1
    if q.segment:
        ((trait, value),) = q.segment.items()
        idx = await conn.fetchval(
            "SELECT idx FROM journey.map_segment WHERE tenant_id = $1 AND segment = $2",
            tenant,
            f"{trait}={value}",
        )
        if idx is None:
            return out
        position = idx + 1
    bounds = period_bounds(q.start, q.end)
    nodes = await conn.fetch(_NODES, tenant, q.kind, *bounds, position)
    for activity, stat, value in nodes:
        if value:
            out.nodes[activity][stat] = value
    edges = await conn.fetch(_EDGES, tenant, q.kind, *bounds, position)
    for a, b, bucket, count, us in edges:
        if count:
            out.edges[(a, b)].add(bucket, count, us)
    return out


def journey_filter(q: MapQuery, first_param: int) -> tuple[str, list[Any]]:
    """SQL conditions on ``journey.map_journey`` for the query's range and segments."""
    clauses: list[str] = []
    args: list[Any] = []
    n = first_param
    if q.start:
        clauses.append(f"day >= ${n}")
        args.append(q.start)
        n += 1
    if q.end:
        clauses.append(f"day < ${n}")
        args.append(q.end)
        n += 1
    for trait, value in sorted(q.segment.items()):
        clauses.append(f"{SEGMENT_COLUMNS[trait]} = ${n}")
        args.append(value)
        n += 1
    return "".join(f" AND {c}" for c in clauses), args


async def load_from_journeys(conn: asyncpg.Connection, tenant: str, q: MapQuery) -> Loaded:
    out = Loaded(stats=False)
    where, args = journey_filter(q, 3)
    rows = await conn.fetch(
        f"""SELECT activities, times_us FROM journey.map_journey
            WHERE tenant_id = $1 AND kind = $2{where}""",  # noqa: S608 - whitelisted columns
        tenant,
        q.kind,
        *args,
    )
    for path, times in rows:
        for a in path:
            out.nodes[a]["count"] = out.nodes[a].get("count", 0) + 1
        for name, a in (("starts", path[0]), ("ends", path[-1])):
            out.nodes[a][name] = out.nodes[a].get(name, 0) + 1
        for i in range(len(path) - 1):
            us = times[i + 1] - times[i]
            out.edges[(path[i], path[i + 1])].add(histogram.bucket(us), 1, us)
    return out


@dataclass
class Mapped:
    """Aggregates at the query's granularity."""

    nodes: dict[str, dict[str, int]]
    edges: dict[tuple[str, str], Edge]
    stats: bool

    @property
    def journeys(self) -> int:
        return sum(s.get("starts", 0) for s in self.nodes.values())

    @property
    def steps(self) -> int:
        return sum(s.get("count", 0) for s in self.nodes.values())


def at_granularity(loaded: Loaded, granularity: str, config: MapConfig) -> Mapped:
    f = activities.mapper(granularity, config.stages)
    nodes: dict[str, dict[str, int]] = defaultdict(dict)
    for activity, stats in loaded.nodes.items():
        target = nodes[f(activity)]
        for stat, v in stats.items():
            target[stat] = target.get(stat, 0) + v
    edges: dict[tuple[str, str], Edge] = defaultdict(Edge)
    for (a, b), edge in loaded.edges.items():
        edges[(f(a), f(b))].merge(edge)
    return Mapped(dict(nodes), dict(edges), loaded.stats)


def node_view(node_id: str, stats: dict[str, int], granularity: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": node_id,
        "count": stats.get("count", 0),
        "starts": stats.get("starts", 0),
        "ends": stats.get("ends", 0),
    }
    if granularity == "touchpoint":
        channel, _, touchpoint = node_id.partition(":")
        out["channel"], out["touchpoint"] = channel, touchpoint or None
    return out


def edge_view(a: str, b: str, edge: Edge) -> dict[str, Any]:
    return {"source": a, "target": b, "count": edge.count, "duration_s": edge.durations()}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def performance(node_id: str, m: Mapped) -> dict[str, Any]:
    """Per-step figures of one node: volume, time to next step, exits, pain points, owner."""
    stats = m.nodes.get(node_id, {})
    count = stats.get("count", 0)
    onward = Edge()
    for (a, _b), edge in m.edges.items():
        if a == node_id:
            onward.merge(edge)
    repeats = m.edges.get((node_id, node_id), Edge()).count
    out: dict[str, Any] = {
        "median_to_next_s": onward.durations()["p50"],
        "exit_rate": _share(stats.get("ends", 0), count),
        "end_share": _share(stats.get("ends", 0), m.journeys),
        "repeats": repeats,
        "repeat_rate": _share(repeats, count),
    }
    if not m.stats:
        return out
    departments = {k.removeprefix("dept:"): v for k, v in stats.items() if k.startswith("dept:")}
    abandoned = {
        k.removeprefix("abandoned:"): v for k, v in stats.items() if k.startswith("abandoned:")
    }
    answered = stats.get("answered", 0)
    out.update(
        transfers=stats.get("transfers", 0),
        transfer_rate=_share(stats.get("transferred", 0), count),
        abandons=stats.get("abandoned", 0),
        abandon_rate=_share(stats.get("abandoned", 0), count),
        abandoned_in=abandoned,
        mean_abandon_wait_s=(
            round(stats.get("abandon_wait_ms", 0) / 1000 / stats["abandoned"], 3)
            if stats.get("abandoned")
            else None
        ),
        queued=stats.get("queued", 0),
        mean_queue_wait_s=(
            round(stats.get("queue_wait_ms", 0) / 1000 / answered, 3) if answered else None
        ),
        resolved_rate=_share(stats.get("resolved", 0), stats.get("resolution_known", 0)),
        department=max(departments, key=lambda d: (departments[d], d)) if departments else None,
        departments=departments,
    )
    return out


def sub_steps(stats: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """IVR and bot nodes, queues and agent teams inside the steps of a node."""
    out: dict[str, list[dict[str, Any]]] = {"ivr": [], "bot": [], "queue": [], "team": []}
    for key, v in stats.items():
        if key.startswith("sub:"):
            _, kind, name = key.split(":", 2)
            out[kind].append({"name": name, "steps": v})
    for items in out.values():
        items.sort(key=lambda i: (-i["steps"], i["name"]))
    return out


def build_map(
    m: Mapped, q: MapQuery, config: MapConfig, *, view: str | None, focus: str | None
) -> dict[str, Any]:
    nodes = sorted(m.nodes.items(), key=lambda kv: (-kv[1].get("count", 0), kv[0]))
    if view == "strategic":
        order = {s: i for i, s in enumerate(config.stage_order)}
        nodes.sort(key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    edges = sorted(m.edges.items(), key=lambda kv: (-kv[1].count, kv[0]))
    body: dict[str, Any] = {**q.echo(), "view": view, "journeys": m.journeys, "steps": m.steps}
    if view == "tactical":
        assert focus is not None
        if focus not in m.nodes:
            raise invalid("focus", f"no node {focus!r} in this map")
        stats = m.nodes[focus]
        body["focus"] = {
            **node_view(focus, stats, q.granularity),
            **performance(focus, m),
            "sub_steps": sub_steps(stats) if m.stats else None,
        }
        edges = [(k, e) for k, e in edges if focus in k]
        near = {x for k, _ in edges for x in k}
        nodes = [(k, s) for k, s in nodes if k in near]
    body["nodes"] = [
        {
            **node_view(k, s, q.granularity),
            **(performance(k, m) if view == "performance" else {}),
        }
        for k, s in nodes
    ]
    body["edges"] = [edge_view(a, b, e) for (a, b), e in edges]
    return body


def channel_switches(m: Mapped) -> dict[str, Any]:
    """Channel-to-channel transitions (different channels only), with time to switch."""
    switches = [(k, e) for k, e in m.edges.items() if k[0] != k[1]]
    total = sum(e.count for _, e in switches)
    switches.sort(key=lambda kv: (-kv[1].count, kv[0]))
    matrix: dict[str, dict[str, int]] = defaultdict(dict)
    for (a, b), e in switches:
        matrix[a][b] = e.count
    return {
        "channels": sorted(m.nodes),
        "switches": [
            {
                "source": a,
                "target": b,
                "count": e.count,
                "share": _share(e.count, total),
                "duration_s": e.durations(),
            }
            for (a, b), e in switches
        ],
        "matrix": dict(matrix),
    }


async def channel_mix(
    conn: asyncpg.Connection, tenant: str, q: MapQuery, by: str
) -> dict[str, Any]:
    """Each channel's share of steps, per value of one segment trait."""
    bounds = period_bounds(q.start, q.end)
    rows = await conn.fetch(
        f"""SELECT s.segment, n.activity, sum(n.v[s.idx + 1])::bigint
            FROM ({_ranged("map_node", "tenant_id, activity, stat, v")}) n
            JOIN journey.map_segment s ON s.tenant_id = n.tenant_id
                 AND s.segment LIKE $9 || '=%'
            WHERE n.stat = 'count'
            GROUP BY 1, 2""",  # noqa: S608 - constants
        tenant, q.kind, *bounds, by,
    )  # fmt: skip
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for segment, activity, steps in rows:
        if steps:
            per[segment.partition("=")[2]][activity.partition(":")[0]] += steps
    segments = []
    for value in sorted(per):
        channels = per[value]
        total = sum(channels.values())
        segments.append(
            {
                "value": value,
                "steps": total,
                "channels": [
                    {"channel": c, "steps": n, "share": _share(n, total)}
                    for c, n in sorted(channels.items(), key=lambda kv: (-kv[1], kv[0]))
                ],
            }
        )
    return {"by": by, "segments": segments}


async def variants(
    conn: asyncpg.Connection, tenant: str, q: MapQuery, config: MapConfig
) -> tuple[int, list[tuple[tuple[str, ...], int]]]:
    """(journeys, [(path at the granularity, count)] most frequent first)."""
    where, args = journey_filter(q, 3)
    rows = await conn.fetch(
        f"""SELECT activities, count(*) FROM journey.map_journey
            WHERE tenant_id = $1 AND kind = $2{where} GROUP BY activities""",  # noqa: S608
        tenant,
        q.kind,
        *args,
    )
    f = activities.mapper(q.granularity, config.stages)
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for path, n in rows:
        counts[tuple(f(a) for a in path)] += n
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return sum(counts.values()), ordered


async def config_of(conn: asyncpg.Connection, tenant: str) -> MapConfig:
    return (await repo.configs(conn, [tenant]))[tenant]
