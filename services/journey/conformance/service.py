"""Conformance over the map's maintained journeys: read from the maintained counts
(``counts.py``) when they answer the query exactly, else computed when read.

The map keeps every journey's touchpoint path and step times exact (late events, replays,
merges, splits; ``rebuild-maps`` recomputes them), so conformance computed from them is exact
too. The alignment depends only on the path at the design's granularity and is cached per
(path, design version) in ``rules``; per journey only the time checks remain.
"""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from services.journey.conformance import counts, rules
from services.journey.conformance import repository as repo
from services.journey.conformance.counts import Judge
from services.journey.conformance.schemas import DesignedJourneyPublic
from services.journey.maps.export import MAX_SCAN, PAGE, parse_cursor
from services.journey.maps.rules import SEGMENTS
from services.journey.maps.schemas import MapQuery
from services.journey.maps.settings import MapConfig

FORMULA = "fitness = 2·LCS(real, designed) / (|real| + |designed|)"
EXAMPLES = 3
EXAMPLE_SCAN = 2000  # journeys examined for examples
EXAMPLE_PAGE = 250


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _example(row: Any, path: tuple[str, ...], fitness: float) -> dict[str, Any]:
    return {
        "customer_id": str(row["customer_id"]),
        "journey_key": row["journey_key"],
        "start_at": row["start_at"].isoformat(),
        "path": list(path),
        "fitness": round(fitness, 4),
        "timeline": f"/v1/customers/{row['customer_id']}/timeline",
    }


@dataclass
class Tally:
    """Conformance figures of a set of journeys."""

    journeys: int = 0
    conforming: int = 0
    out_of_scope: int = 0  # (from counts only)
    fitness: Counter[float] = field(default_factory=Counter)
    with_deviation: Counter[rules.Deviation] = field(default_factory=Counter)
    occurrences: Counter[rules.Deviation] = field(default_factory=Counter)
    examples: dict[rules.Deviation, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, verdict: rules.Verdict, n: int = 1) -> None:
        self.journeys += n
        self.fitness[verdict.fitness] += n
        if verdict.conforms:
            self.conforming += n
            return
        self.occurrences.update({d: c * n for d, c in Counter(verdict.deviations).items()})
        for deviation in dict.fromkeys(verdict.deviations):
            self.with_deviation[deviation] += n

    def example(self, row: Any, path: tuple[str, ...], verdict: rules.Verdict) -> None:
        for deviation in dict.fromkeys(verdict.deviations):
            found = self.examples[deviation]
            if len(found) < EXAMPLES:
                found.append(_example(row, path, verdict.fitness))

    def summary(self) -> dict[str, Any]:
        n = self.journeys
        values = sorted(self.fitness.items())
        histogram: dict[str, int] = {}
        median = None
        seen = 0
        for value, count in values:
            tenth = min(9, int(value * 10 + 1e-9))
            label = f"{tenth / 10:.1f}-{(tenth + 1) / 10:.1f}"
            histogram[label] = histogram.get(label, 0) + count
            seen += count
            if median is None and seen * 2 >= n:
                median = value  # nearest rank: the ⌈n/2⌉-th smallest
        return {
            "mean": round(sum(v * c for v, c in values) / n, 4) if n else None,
            "min": round(values[0][0], 4) if values else None,
            "p50": round(median, 4) if median is not None else None,
            "histogram": histogram,
        }

    def ranked(self, limit: int) -> list[rules.Deviation]:
        """The ``limit`` deviations shown: most journeys first, then by kind and step."""
        ranked = sorted(self.with_deviation.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return [d for d, _n in ranked]

    def deviations(self, limit: int) -> list[dict[str, Any]]:
        ranked = [(d, self.with_deviation[d]) for d in self.ranked(limit)]
        return [
            {
                "kind": kind,
                "step": step,
                "journeys": n,
                "share": _share(n, self.journeys),
                "occurrences": self.occurrences[(kind, step)],
                "examples": self.examples[(kind, step)],
            }
            for (kind, step), n in ranked
        ]

    def body(self, limit: int) -> dict[str, Any]:
        return {
            "journeys": self.journeys,
            "conforming": self.conforming,
            "conforming_share": _share(self.conforming, self.journeys),
            "fitness": self.summary(),
            "deviations": self.deviations(limit),
        }


async def conformance(
    conn: asyncpg.Connection,
    tenant: str,
    design: DesignedJourneyPublic,
    config: MapConfig,
    q: MapQuery,
    *,
    by: str | None,
    limit: int,
) -> dict[str, Any]:
    """From the maintained counts when they answer the query exactly (``counts.read``);
    otherwise computed from the journeys (``computed``)."""
    judge = Judge(design, config)
    counted = await counts.read(conn, tenant, design, config, q, by)
    if counted is not None:
        whole = tally(counted.pop(None))
        groups: dict[str, Tally] = defaultdict(Tally)
        groups.update({v: tally(s) for v, s in counted.items() if v is not None and s.get("n")})
        out_of_scope = whole.out_of_scope
        source = "counts"
    else:
        whole, groups, out_of_scope = await computed(conn, tenant, judge, q, by)
        source = "journeys"
    await _examples(conn, tenant, q, judge, whole, groups, by, limit)
    body: dict[str, Any] = {
        **q.echo(),
        "granularity": design.definition.granularity.value,
        "name": design.name,
        "version": design.version,
        "formula": FORMULA,
        "design": [s.activity for s in design.definition.steps],
        "computed_from": source,
        "out_of_scope": out_of_scope,
        **whole.body(limit),
    }
    if by is not None:
        body["by"] = by
        body["by_segment"] = [
            {"value": value, **groups[value].body(limit)} for value in sorted(groups)
        ]
    return body


def tally(stats: dict[str, int]) -> Tally:
    """A tally from summed counts (``counts.stats_of`` names)."""
    out = Tally()
    out.journeys = stats.get("n", 0)
    out.conforming = stats.get("ok", 0)
    out.out_of_scope = stats.get("out", 0)
    for stat, n in stats.items():
        if not n:
            continue
        if stat.startswith("f:"):
            out.fitness[float(stat[2:])] += n
        elif stat.startswith(("d:", "o:")):
            kind, _, step = stat[2:].partition(":")
            target = out.with_deviation if stat[0] == "d" else out.occurrences
            target[(kind, step)] += n
    return out


async def computed(
    conn: asyncpg.Connection, tenant: str, judge: Judge, q: MapQuery, by: str | None
) -> tuple[Tally, dict[str, Tally], int]:
    """Counted by distinct path in PostgreSQL, each path aligned once; for designs with waits,
    the journeys whose matched steps came too late are counted in PostgreSQL too."""
    whole = Tally()
    groups: dict[str, Tally] = defaultdict(Tally)
    out_of_scope = 0
    timed: dict[int, tuple[rules.Alignment, list[rules.TimedPair]]] = {}
    counts: dict[tuple[int, str | None], int] = {}
    pairs: list[tuple[int, str, int, int, int, int]] = []
    ids: dict[tuple[str, ...], int] = {}  # one id per distinct path (rows repeat it per segment)
    for row in await repo.variants(conn, tenant, q, by):
        _path, alignment = judge.aligned(row["activities"])
        n, seg = row["n"], row["seg"]
        if alignment is None:
            out_of_scope += n
            continue
        found = rules.timed_pairs(alignment, judge.model) if judge.timed else []
        if not found:
            _add(whole, groups, seg, rules.Verdict(alignment.fitness, alignment.deviations), n)
            continue
        key = tuple(row["activities"])
        idx = ids.get(key)
        if idx is None:
            idx = ids[key] = len(ids)
            timed[idx] = (alignment, found)
            joined = repo.SEPARATOR.join(key)
            pairs += [(idx, joined, k, i0, i1, lim) for k, (i0, i1, lim, _s) in enumerate(found)]
        counts[(idx, seg)] = n
    if pairs:
        for row in await repo.late_pairs(conn, tenant, q, by, pairs):
            alignment, found = timed[row["idx"]]
            slow = tuple((rules.TOO_SLOW, found[k][3]) for k in row["ks"])
            verdict = rules.Verdict(alignment.fitness, alignment.deviations + slow)
            _add(whole, groups, row["seg"], verdict, row["n"])
            counts[(row["idx"], row["seg"])] -= row["n"]
        for (idx, seg), n in counts.items():
            if n:
                alignment = timed[idx][0]
                _add(whole, groups, seg, rules.Verdict(alignment.fitness, alignment.deviations), n)
    return whole, groups, out_of_scope


def _add(
    whole: Tally, groups: dict[str, Tally], seg: str | None, verdict: rules.Verdict, n: int
) -> None:
    whole.add(verdict, n)
    if seg is not None:
        groups[seg].add(verdict, n)


async def _examples(
    conn: asyncpg.Connection,
    tenant: str,
    q: MapQuery,
    judge: Judge,
    whole: Tally,
    groups: dict[str, Tally],
    by: str | None,
    limit: int,
) -> None:
    """Examples for each deviation shown from the first journeys in key order (at most
    ``EXAMPLE_SCAN``; the drill-down lists them all). Read a page at a time, stopping once every
    deviation shown has its examples: the same examples as reading all ``EXAMPLE_SCAN``."""
    needed = [(whole, d) for d in whole.ranked(limit)]
    needed += [(g, d) for g in groups.values() for d in g.ranked(limit)]
    after, scanned = parse_cursor(None), 0
    while needed and scanned < EXAMPLE_SCAN:
        size = min(EXAMPLE_PAGE, EXAMPLE_SCAN - scanned)
        rows = await repo.journeys_after(conn, tenant, q, after, size)
        for row in rows:
            path, verdict = judge(row["activities"], row["times_us"])
            if verdict is None or verdict.conforms:
                continue
            whole.example(row, path, verdict)
            if by is not None and row[by] is not None:
                groups[row[by]].example(row, path, verdict)
        if len(rows) < size:
            break
        scanned += size
        after = (rows[-1]["day"], rows[-1]["customer_id"], rows[-1]["journey_key"])
        needed = [(t, d) for t, d in needed if len(t.examples[d]) < EXAMPLES]


def deviation_filter(value: str) -> Callable[[rules.Verdict], bool]:
    """``kind:step`` (e.g. ``skipped:phone:agent_call``), ``conforming`` or ``deviating``."""
    if value == "conforming":
        return lambda v: v.conforms
    if value == "deviating":
        return lambda v: not v.conforms
    kind, _, step = value.partition(":")
    if kind not in rules.KINDS or not step:
        raise ValueError(
            "write kind:step with kind one of skipped, inserted, wrong_order, too_slow; "
            "or conforming, deviating"
        )
    wanted = (kind, step)
    return lambda v: wanted in v.deviations


async def journeys_page(
    conn: asyncpg.Connection,
    tenant: str,
    design: DesignedJourneyPublic,
    config: MapConfig,
    q: MapQuery,
    match: Callable[[rules.Verdict], bool],
    *,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """The journeys behind a deviation, keyset-paged like the map's drill-down."""
    judge = Judge(design, config)
    after = parse_cursor(cursor)
    items: list[dict[str, Any]] = []
    scanned = 0
    more = False
    while len(items) < limit:
        if scanned >= MAX_SCAN:
            more = True
            break
        rows = await repo.journeys_after(conn, tenant, q, after, PAGE)
        for row in rows:
            scanned += 1
            after = (row["day"], row["customer_id"], row["journey_key"])
            path, verdict = judge(row["activities"], row["times_us"])
            if verdict is not None and match(verdict):
                items.append(
                    {
                        **_example(row, path, verdict.fitness),
                        "deviations": [{"kind": k, "step": s} for k, s in verdict.deviations],
                        "segment": {name: row[name] for name in SEGMENTS},
                    }
                )
                if len(items) == limit:
                    more = True
                    break
        if len(rows) < PAGE:
            break
    next_cursor = None
    if more:
        next_cursor = base64.urlsafe_b64encode(
            orjson.dumps([after[0].isoformat(), str(after[1]), after[2]])
        ).decode()
    return {"items": items, "next_cursor": next_cursor, "scanned": scanned}
