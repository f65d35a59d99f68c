"""A plain recomputation of the map for tests: group, sort, pair, count (no Waypoint code).

Written from the definitions in docs/journey-map.md, not from ``services.journey.maps.rules``,
so that a mistake in the rules shows up as a difference.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

OWN_STEP = {
    "marketing.touched",
    "purchase.completed",
    "case.opened",
    "case.resolved",
    "customer.churned",
    "customer.renewed",
}


@dataclass
class Ev:
    id: str
    type: str
    t: int  # microseconds
    data: dict[str, Any]
    customer: str = "c"


@dataclass
class RefMap:
    nodes: Counter = field(default_factory=Counter)
    starts: Counter = field(default_factory=Counter)
    ends: Counter = field(default_factory=Counter)
    edges: Counter = field(default_factory=Counter)
    durations: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    journeys: int = 0
    steps: int = 0
    variants: Counter = field(default_factory=Counter)


def ref_steps(events: list[Ev]) -> list[tuple[int, str, str, list[str], str]]:
    """(time, first event id, activity, case ids, customer) per step, in journey order."""
    groups: dict[tuple[str, str], list[Ev]] = defaultdict(list)
    for e in events:
        if e.data.get("interaction_id"):
            groups[(e.customer, "i" + e.data["interaction_id"])].append(e)
        elif e.type in OWN_STEP:
            groups[(e.customer, "e" + e.id)].append(e)
    rows = []
    for (customer, _), evs in groups.items():
        evs.sort(key=lambda e: (e.t, e.id))
        channel = next((e.data["channel"] for e in evs if e.data.get("channel")), evs[0].type)
        touchpoint = next((e.data["touchpoint"] for e in evs if e.data.get("touchpoint")), None)
        activity = f"{channel}:{touchpoint}" if touchpoint else channel
        cases = sorted({e.data["case_id"] for e in evs if e.type.startswith("case.")})
        rows.append((evs[0].t, evs[0].id, activity, cases, customer))
    rows.sort()
    return rows


def ref_journeys(events: list[Ev], kind: str, window_us: int) -> list[list[tuple[int, str]]]:
    """Each journey as [(time, activity)] in order."""
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for row in ref_steps(events):
        by_customer[row[4]].append(row)
    out: list[list[tuple[int, str]]] = []
    for rows in by_customer.values():
        if kind == "customer":
            out.append([(r[0], r[2]) for r in rows])
        elif kind == "episode":
            current = [rows[0]]
            for prev, row in zip(rows, rows[1:], strict=False):
                if row[0] - prev[0] > window_us:
                    out.append([(r[0], r[2]) for r in current])
                    current = []
                current.append(row)
            out.append([(r[0], r[2]) for r in current])
        else:
            cases: dict[str, list[Any]] = defaultdict(list)
            for row in rows:
                for case in row[3]:
                    cases[case].append(row)
            out.extend([(r[0], r[2]) for r in rs] for rs in cases.values())
    return out


def ref_map(events: list[Ev], kind: str = "episode", window_us: int = 7 * 86_400_000_000) -> RefMap:
    m = RefMap()
    for journey in ref_journeys(events, kind, window_us):
        m.journeys += 1
        m.steps += len(journey)
        m.variants[tuple(a for _, a in journey)] += 1
        m.starts[journey[0][1]] += 1
        m.ends[journey[-1][1]] += 1
        for _, a in journey:
            m.nodes[a] += 1
        for (t1, a), (t2, b) in zip(journey, journey[1:], strict=False):
            m.edges[(a, b)] += 1
            m.durations[(a, b)].append(t2 - t1)
    return m


def nearest_rank(values: list[int], q: float) -> int:
    import math

    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
