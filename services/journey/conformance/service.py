"""Conformance at query time over the map's maintained journeys.

The map keeps every journey's touchpoint path and step times exact (late events, replays,
merges, splits; ``rebuild-maps`` recomputes them), so conformance computed from them is exact
too. The alignment depends only on the path at the design's granularity and is cached per
(path, design version) in ``rules``; per journey only the time checks remain.
"""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from services.journey.conformance import repository as repo
from services.journey.conformance import rules
from services.journey.conformance.schemas import DesignedJourneyPublic
from services.journey.maps import activities
from services.journey.maps.export import MAX_SCAN, PAGE, parse_cursor
from services.journey.maps.rules import SEGMENTS
from services.journey.maps.schemas import MapQuery
from services.journey.maps.settings import MapConfig

FORMULA = "fitness = 2·LCS(real, designed) / (|real| + |designed|)"
EXAMPLES = 3


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
    fitness: Counter[float] = field(default_factory=Counter)
    with_deviation: Counter[rules.Deviation] = field(default_factory=Counter)
    occurrences: Counter[rules.Deviation] = field(default_factory=Counter)
    examples: dict[rules.Deviation, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, row: Any, path: tuple[str, ...], verdict: rules.Verdict) -> None:
        self.journeys += 1
        self.fitness[verdict.fitness] += 1
        if verdict.conforms:
            self.conforming += 1
            return
        self.occurrences.update(verdict.deviations)
        for deviation in dict.fromkeys(verdict.deviations):
            self.with_deviation[deviation] += 1
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

    def deviations(self, limit: int) -> list[dict[str, Any]]:
        ranked = sorted(self.with_deviation.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
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


class Judge:
    """Paths mapped to the design's granularity and judged, alignments cached per path."""

    def __init__(self, design: DesignedJourneyPublic, config: MapConfig):
        d = design.definition
        self.model = d.model()
        self.scope = d.scope.value
        self.f = activities.mapper(d.granularity.value, config.stages)
        self.timed = any(s.max_wait_us is not None for s in self.model)
        self._paths: dict[tuple[str, ...], tuple[tuple[str, ...], rules.Alignment | None]] = {}

    def __call__(
        self, stored: Iterable[str], times_us: list[int]
    ) -> tuple[tuple[str, ...], rules.Verdict | None]:
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
        path, alignment = found
        if alignment is None:
            return path, None
        deviations = alignment.deviations
        if self.timed:
            deviations += tuple(rules.too_slow(alignment, self.model, times_us))
        return path, rules.Verdict(alignment.fitness, deviations)


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
    judge = Judge(design, config)
    whole = Tally()
    groups: dict[str, Tally] = defaultdict(Tally)
    out_of_scope = 0
    for row in await repo.journeys(conn, tenant, q):
        path, verdict = judge(row["activities"], row["times_us"])
        if verdict is None:
            out_of_scope += 1
            continue
        whole.add(row, path, verdict)
        if by is not None and row[by] is not None:
            groups[row[by]].add(row, path, verdict)
    body: dict[str, Any] = {
        **q.echo(),
        "granularity": design.definition.granularity.value,
        "name": design.name,
        "version": design.version,
        "formula": FORMULA,
        "design": [s.activity for s in design.definition.steps],
        "out_of_scope": out_of_scope,
        **whole.body(limit),
    }
    if by is not None:
        body["by"] = by
        body["by_segment"] = [
            {"value": value, **groups[value].body(limit)} for value in sorted(groups)
        ]
    return body


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
