"""The journey map's definitions, as pure functions (values in, values out; no I/O).

- A **step** is one interaction at one touchpoint: every event sharing an ``interaction_id``
  forms one step. Events without one form a step of their own only for the pre-sales and
  outcome types in ``STEP_TYPES``; the others annotate the customer (traits, first seen).
- A step's summary is a fold of its events that does not depend on their order (earliest or
  latest carrier by (time, event id), sums, bounded sets), so late and out-of-order events,
  and events of customers merged later, give the same step as in-order delivery.
- A **journey** is a customer's steps (``customer``), split where the gap exceeds the tenant's
  window (``episode``), or the steps carrying one case id (``case``). Steps are ordered by time,
  ties by the step's earliest event id. Directly-follows counts, starts, ends and durations are
  PM4Py's ``discover_dfg`` / ``discover_performance_dfg`` on that order, self-loops included.
- Durations are integer microseconds; a log-bucket histogram gives p50/p90 within 4.4 %.
"""

from __future__ import annotations

import functools
from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.journey.maps.histogram import bucket

STEP_TYPES = frozenset(
    {
        "marketing.touched",
        "purchase.completed",
        "case.opened",
        "case.resolved",
        "customer.churned",
        "customer.renewed",
    }
)
CUSTOMER, EPISODE, CASE = 0, 1, 2
JOURNEYS = {"customer": CUSTOMER, "episode": EPISODE, "case": CASE}
SEGMENT_TRAITS = ("age_group", "region", "tier", "lifecycle_stage")
SEGMENTS = (*SEGMENT_TRAITS, "tenure")
DAY_US = 86_400_000_000
DEFAULT_WINDOW_US = 7 * DAY_US
DEFAULT_TENURE_DAYS = (30, 90, 365)
MAX_SET = 50  # values kept per step set (the smallest, so the cut is order-independent)
MAX_TEXT = 128
MAX_REOPENS = 200  # reopened cases kept per customer (the earliest, so the cut is order-free)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Step = dict[str, Any]  # the mergeable summary, stored as JSON
Profile = dict[str, Any]  # {"first": time_us | None, "traits": {name: [time_us, id, value]}}
SegValues = tuple[str | None, ...]  # SEGMENTS order; None: unknown


@dataclass(frozen=True, slots=True)
class Fact:
    """One stored event as the map reads it: id, type, time and its ``data`` object."""

    event_id: str
    type: str
    time_us: int
    data: dict[str, Any]


def to_us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def day_of(us: int) -> int:
    """Days since 1970-01-01 of the UTC day holding ``us``."""
    return us // DAY_US


def as_date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def month_of(day: int) -> int:
    """The day number of the first day of ``day``'s month."""
    d = as_date(day)
    return (d.replace(day=1) - date(1970, 1, 1)).days


# --- steps ------------------------------------------------------------------------------------


def step_key(fact: Fact) -> str | None:
    """The step an event belongs to, or None when it only annotates the customer."""
    interaction = _text(fact.data.get("interaction_id"))
    if interaction:
        return f"i:{interaction}"
    if fact.type in STEP_TYPES:
        return f"e:{fact.event_id}"
    return None


def new_step(key: str, fact: Fact) -> Step:
    return {"k": key, "t": fact.time_us, "e": fact.event_id, "n": 0, "f": {}, "l": {}, "c": {}}


def fold_step(step: Step, fact: Fact) -> Step:
    """Add one event to its step (mutates and returns it). Any order gives the same summary."""
    rank = (fact.time_us, fact.event_id)
    if rank < (step["t"], step["e"]):
        step["t"], step["e"] = rank
    step["n"] += 1
    d, kind = fact.data, fact.type
    _first(step, "type", rank, kind)
    for name in ("channel", "touchpoint", "contact_reason"):
        value = _text(d.get(name))
        if value:
            _first(step, name, rank, value)
    department = _text(d.get("department") or d.get("to_department"))
    if department:
        _last(step, "department", rank, department)
    team = _text(d.get("team") or d.get("to_team"))
    if team:
        _add(step, "teams", team)
        _last(step, "team", rank, team)  # who had it at the end (FCR by agent team)
    if kind.startswith("case."):
        _add(step, "cases", _text(d.get("case_id")))
    if kind == "contact.transferred":
        _count(step, "transfers", 1)
        _add(step, "queues", _text(d.get("to_queue")))
    elif kind == "contact.abandoned":
        _count(step, "abandons", 1)
        where = _text(d.get("where")) or "other"
        _add(step, "abandoned", where)
        at = _text(d.get("node")) or _text(d.get("queue"))
        _first(step, "abandon_at", rank, f"{where}:{at}" if at else where)  # pain points
        _count(step, "abandon_wait_ms", _ms(d.get("wait_s")))
        _add(step, "queues", _text(d.get("queue")))
    elif kind == "contact.queued":
        _first(step, "queued", rank, fact.time_us)
        _add(step, "queues", _text(d.get("queue")))
    elif kind == "agent.joined":
        _first(step, "answered", rank, fact.time_us)
    elif kind in ("ivr.step", "bot.step"):
        _add(step, kind[:3], _text(d.get("node")))
    elif kind == "contact.ended":
        for name in ("disposition", "resolved"):
            if d.get(name) is not None:
                _last(step, name, rank, d[name])
    elif kind == "message.received":
        _count(step, "messages_in", 1)
        if isinstance(d.get("sentiment"), int | float):
            _count(step, "sentiment_n", 1)
            _count(step, "sentiment_milli", round(d["sentiment"] * 1000))
    elif kind == "message.sent":
        _count(step, "messages_out", 1)
    elif kind == "callback.requested":
        _count(step, "callbacks_requested", 1)
    elif kind == "callback.completed":
        _count(step, "callbacks_completed", 1)
        if d.get("outcome") is not None:
            _last(step, "callback_outcome", rank, _text(d["outcome"]))
    elif kind == "survey.responded" and isinstance(d.get("score"), int | float):
        survey = _text(d.get("survey")) or "survey"
        _count(step, f"{survey}_n", 1)
        _count(step, f"{survey}_milli", round(d["score"] * 1000))
    elif kind == "feedback.submitted":
        _count(step, "feedback", 1)
    return step


def _text(value: Any) -> str | None:
    if type(value) is str:  # the common case, first
        return value.strip()[:MAX_TEXT] or None
    if value is None or isinstance(value, dict | list):
        return None
    text = (str(value).lower() if isinstance(value, bool) else str(value)).strip()
    return text[:MAX_TEXT] or None


def _ms(seconds: Any) -> int:
    return round(seconds * 1000) if isinstance(seconds, int | float) and seconds > 0 else 0


def _first(step: Step, name: str, rank: tuple[int, str], value: Any) -> None:
    current = step["f"].get(name)
    if current is None or rank < (current[0], current[1]):
        step["f"][name] = [rank[0], rank[1], value]


def _last(step: Step, name: str, rank: tuple[int, str], value: Any) -> None:
    current = step["l"].get(name)
    if current is None or rank > (current[0], current[1]):
        step["l"][name] = [rank[0], rank[1], value]


def _count(step: Step, name: str, n: int) -> None:
    if n:
        step["c"][name] = step["c"].get(name, 0) + n


def _add(step: Step, name: str, value: str | None) -> None:
    if not value:
        return
    values = step.setdefault("s", {}).setdefault(name, [])
    if value not in values:
        insort(values, value)
        del values[MAX_SET:]


def build_steps(facts: Iterable[Fact], steps: dict[str, Step] | None = None) -> dict[str, Step]:
    """Fold events into steps by key (starting from ``steps``, which is updated)."""
    steps = {} if steps is None else steps
    for fact in facts:
        key = step_key(fact)
        if key is None:
            continue
        step = steps.get(key)
        if step is None:
            step = steps[key] = new_step(key, fact)
        fold_step(step, fact)
    return steps


def channel_of(step: Step) -> str:
    """The first channel its events name; without one, its first event's type."""
    found = step["f"].get("channel") or step["f"]["type"]
    return str(found[2])


def activity_of(step: Step) -> str:
    """Touchpoint-level activity: ``channel:touchpoint``, or the channel alone."""
    touchpoint = step["f"].get("touchpoint")
    channel = channel_of(step)
    return f"{channel}:{touchpoint[2]}" if touchpoint else channel


def department_of(step: Step) -> str | None:
    found = step["l"].get("department")
    return str(found[2]) if found else None


def step_stats(step: Step) -> dict[str, int]:
    """Per-step counters summed on the map's nodes (performance and tactical views)."""
    out: dict[str, int] = {}
    c, f, sets = step["c"], step["f"], step.get("s", {})
    if c.get("transfers"):
        out["transfers"] = c["transfers"]
        out["transferred"] = 1
    if c.get("abandons"):
        out["abandoned"] = 1
        for where in sets.get("abandoned", ()):
            out[f"abandoned:{where}"] = 1
        if c.get("abandon_wait_ms"):
            out["abandon_wait_ms"] = c["abandon_wait_ms"]
    if "queued" in f:
        out["queued"] = 1
        answered = f.get("answered")
        if answered and answered[2] >= f["queued"][2]:
            out["answered"] = 1
            out["queue_wait_ms"] = (answered[2] - f["queued"][2]) // 1000
    resolved = step["l"].get("resolved")
    if resolved is not None:
        out["resolution_known"] = 1
        if resolved[2] is True:
            out["resolved"] = 1
    department = department_of(step)
    if department:
        out[f"dept:{department}"] = 1
    for kind in ("ivr", "bot", "queues", "teams"):
        for value in sets.get(kind, ()):
            out[f"sub:{kind.rstrip('s')}:{value}"] = 1
    return out


@dataclass(slots=True)
class StepView:
    """What journeys and aggregates need of a step."""

    key: str
    time_us: int
    event_id: str
    activity: str
    cases: tuple[str, ...]
    stats: dict[str, int]


def view(step: Step) -> StepView:
    return StepView(
        key=step["k"],
        time_us=step["t"],
        event_id=step["e"],
        activity=activity_of(step),
        cases=tuple(step.get("s", {}).get("cases", ())),
        stats=step_stats(step),
    )


def ordered(steps: Iterable[Step]) -> list[StepView]:
    """Views in journey order: time, then the step's earliest event id."""
    return sorted((view(s) for s in steps), key=lambda v: (v.time_us, v.event_id))


# --- the customer's profile: segment traits and first seen --------------------------------------


def new_profile() -> Profile:
    return {"first": None, "traits": {}}


def fold_profile(profile: Profile, fact: Fact) -> Profile:
    """First seen (any event) and segment traits, latest (time, event id) wins."""
    if profile["first"] is None or fact.time_us < profile["first"]:
        profile["first"] = fact.time_us
    rank = [fact.time_us, fact.event_id]
    traits: dict[str, list[Any]] = profile["traits"]
    updates: dict[str, str | None] = {}
    if fact.type == "identity.linked" and isinstance(fact.data.get("traits"), dict):
        given = fact.data["traits"]
        updates = {name: _text(given[name]) for name in SEGMENT_TRAITS if name in given}
    elif fact.type in ("customer.churned", "customer.renewed"):
        updates = {"lifecycle_stage": "churned" if fact.type.endswith("churned") else "renewed"}
    for name, value in updates.items():
        current = traits.get(name)
        if current is None or rank > current[:2]:
            traits[name] = [*rank, value]
    if fact.type.startswith("case.") and _text(fact.data.get("status")) == "reopened":
        case = _text(fact.data.get("case_id"))
        if case:  # a reopened case (journey quality: FCR with reopens counted)
            reopens: list[list[Any]] = profile.setdefault("reopens", [])
            if [fact.time_us, case] not in reopens:
                insort(reopens, [fact.time_us, case])
                del reopens[MAX_REOPENS:]
    return profile


def changes_nothing(profile: Profile | None, facts: Iterable[Fact]) -> bool:
    """True when folding ``facts`` into a customer whose stored profile is ``profile`` changes
    neither a step nor the profile (e.g. a trait update repeating the stored value, a later
    event that is no step): the customer's map, journeys and quality rows stay as stored."""
    if profile is None:
        return False
    trial: Profile = {**profile, "traits": dict(profile["traits"])}
    if "reopens" in profile:
        trial["reopens"] = list(profile["reopens"])
    for fact in facts:
        if step_key(fact) is not None:
            return False
        fold_profile(trial, fact)
    return trial == profile


def tenure_label(days: float, bands: Sequence[int]) -> str:
    """``0-30d``, ``30-90d`` … ``365d+`` for bands (30, 90, 365)."""
    i = bisect_right(bands, days)
    low = 0 if i == 0 else bands[i - 1]
    return f"{low}d+" if i == len(bands) else f"{low}-{bands[i]}d"


def tenure_labels(bands: Sequence[int]) -> list[str]:
    return [tenure_label(b, bands) for b in (0, *bands)]


def seg_values(profile: Profile, start_us: int, bands: Sequence[int]) -> SegValues:
    traits = profile["traits"]
    values = [traits[name][2] if name in traits else None for name in SEGMENT_TRAITS]
    first = profile["first"] if profile["first"] is not None else start_us
    tenure = tenure_label(max(0, start_us - first) / DAY_US, bands)
    return (*values, tenure)


def seg_keys(values: SegValues) -> list[str]:
    """The aggregate rows a journey counts in: all (``""``), and one per known trait value."""
    return [""] + [f"{n}={v}" for n, v in zip(SEGMENTS, values, strict=True) if v is not None]


@functools.lru_cache(maxsize=4096)
def seg_rows(values: SegValues) -> tuple[str, ...]:
    """``seg_keys`` as one shared tuple per segment (a batch's changes hold thousands)."""
    return tuple(seg_keys(values))


# --- journeys -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Journey:
    kind: int
    key: str
    steps: list[StepView] = field(default_factory=list)

    @property
    def start_us(self) -> int:
        return self.steps[0].time_us


def journeys(views: Sequence[StepView], *, window_us: int) -> list[Journey]:
    """The customer's journeys under every definition (views in journey order)."""
    if not views:
        return []
    out = [Journey(CUSTOMER, "", list(views))]
    episode = Journey(EPISODE, views[0].key, [views[0]])
    for prev, step in zip(views, views[1:], strict=False):
        if step.time_us - prev.time_us > window_us:
            out.append(episode)
            episode = Journey(EPISODE, step.key, [])
        episode.steps.append(step)
    out.append(episode)
    cases: dict[str, Journey] = {}
    for step in views:
        for case in step.cases:
            cases.setdefault(case, Journey(CASE, case, [])).steps.append(step)
    out.extend(cases[k] for k in sorted(cases))
    return out


# --- contributions to the aggregates ----------------------------------------------------------

NodeKey = tuple[str, str]  # (activity, stat)
EdgeKey = tuple[str, str, int]  # (source, target, bucket)
Group = tuple[int, int, SegValues]  # (journey kind, day of the journey's start, segment)


@dataclass(slots=True)
class Part:
    """What a group of journeys adds to the map: node stats and edge (count, µs) per bucket."""

    nodes: dict[NodeKey, int] = field(default_factory=dict)
    edges: dict[EdgeKey, list[int]] = field(default_factory=dict)

    def add(self, other: Part, sign: int = 1) -> None:
        nodes, edges = self.nodes, self.edges
        for k, v in other.nodes.items():
            nodes[k] = nodes.get(k, 0) + sign * v
        for ek, (count, us) in other.edges.items():
            cur = edges.get(ek)
            if cur is None:
                edges[ek] = [sign * count, sign * us]
            else:
                cur[0] += sign * count
                cur[1] += sign * us

    def prune(self) -> bool:
        """Drop zero entries; True when something is left."""
        self.nodes = {k: v for k, v in self.nodes.items() if v}
        self.edges = {k: v for k, v in self.edges.items() if v[0] or v[1]}
        return bool(self.nodes or self.edges)


def journey_part(journey: Journey, part: Part | None = None) -> Part:
    part = part or Part()
    nodes, edges = part.nodes, part.edges
    steps = journey.steps
    for step in steps:
        key = (step.activity, "count")
        nodes[key] = nodes.get(key, 0) + 1
        for stat, n in step.stats.items():
            k = (step.activity, stat)
            nodes[k] = nodes.get(k, 0) + n
    first, last = (steps[0].activity, "starts"), (steps[-1].activity, "ends")
    nodes[first] = nodes.get(first, 0) + 1
    nodes[last] = nodes.get(last, 0) + 1
    for a, b in zip(steps, steps[1:], strict=False):
        us = b.time_us - a.time_us
        ek = (a.activity, b.activity, bucket(us))
        cur = edges.get(ek)
        if cur is None:
            edges[ek] = [1, us]
        else:
            cur[0] += 1
            cur[1] += us
    return part


JourneyRow = tuple[int, int, tuple[str, ...], tuple[int, ...], SegValues]
# (start day, steps, touchpoint activities, step times in µs, segment) of one journey


def derive(
    steps: Iterable[Step], profile: Profile, *, window_us: int, bands: Sequence[int]
) -> tuple[dict[Group, Part], dict[tuple[int, str], JourneyRow]]:
    """A customer's contribution to the map, by (journey kind, start day, segment), and its
    journeys as rows (kind, key) → ``JourneyRow``."""
    groups: dict[Group, Part] = {}
    rows: dict[tuple[int, str], JourneyRow] = {}
    for journey in journeys(ordered(steps), window_us=window_us):
        start = journey.start_us
        values = seg_values(profile, start, bands)
        group = (journey.kind, day_of(start), values)
        groups[group] = journey_part(journey, groups.get(group))
        rows[(journey.kind, journey.key)] = (
            day_of(start),
            len(journey.steps),
            tuple(s.activity for s in journey.steps),
            tuple(s.time_us for s in journey.steps),
            values,
        )
    return groups, rows


def contribution(
    steps: Iterable[Step], profile: Profile, *, window_us: int, bands: Sequence[int]
) -> dict[Group, Part]:
    """A customer's whole contribution to the map, by (journey kind, start day, segment)."""
    return derive(steps, profile, window_us=window_us, bands=bands)[0]


def difference(old: dict[Group, Part], new: dict[Group, Part]) -> dict[Group, Part]:
    """``new - old``, without the groups that cancel out (``new``'s parts may be reused)."""
    if not old:  # nothing to take out (a customer's first visit): new's parts, pruned
        return {group: part for group, part in new.items() if part.prune()}
    out: dict[Group, Part] = {}
    for group in old.keys() | new.keys():
        part = Part()
        if group in new:
            part.add(new[group])
        if group in old:
            part.add(old[group], -1)
        if part.prune():
            out[group] = part
    return out


AggNode = tuple[int, int, str, str]  # kind, day, activity, stat
AggEdge = tuple[int, int, str, str, int]  # kind, day, source, target, bucket


Vector = tuple[str, ...]  # the segment rows a contribution counts in


@dataclass(slots=True)
class Deltas:
    """Changes to the stored aggregates by the UTC day of the journeys' start (the month rows
    are summed from them when written), each counted in the segment rows of its journeys
    (``""`` all, ``trait=value``). Kept by key and segment rows (one flat tuple: a replayed
    batch holds tens of thousands) so a batch's customers coalesce before being spread into
    per-segment vectors once."""

    nodes: dict[tuple[int, int, str, str, Vector], int] = field(default_factory=dict)
    edges: dict[tuple[int, int, str, str, int, Vector], list[int]] = field(default_factory=dict)

    def add(self, group: Group, part: Part) -> None:
        kind, day, values = group
        segs = seg_rows(values)
        nodes, edges = self.nodes, self.edges
        for (activity, stat), v in part.nodes.items():
            nk = (kind, day, activity, stat, segs)
            nodes[nk] = nodes.get(nk, 0) + v
        for (a, b, bk), (count, us) in part.edges.items():
            ek = (kind, day, a, b, bk, segs)
            cur = edges.get(ek)
            if cur is None:
                edges[ek] = [count, us]
            else:
                cur[0] += count
                cur[1] += us

    def take_nodes(self, at: Mapping[str, int]) -> dict[AggNode, list[int]]:
        """Per node key, its change as a dense vector over the segment rows' positions ``at``
        (``""`` all at 0; ending at its last non-zero position; unchanged keys left out). The
        collected node changes are consumed as they are spread (a batch's are never held
        twice)."""
        out: dict[AggNode, list[int]] = {}
        places: dict[Vector, tuple[tuple[int, ...], int]] = {}
        nodes = self.nodes
        while nodes:
            (kind, day, activity, stat, segs), v = nodes.popitem()
            if not v:
                continue
            place = places.get(segs)
            if place is None:
                place = places[segs] = _place(segs, at)
            ix, width = place
            vec = out.get((kind, day, activity, stat))
            if vec is None:
                vec = out[(kind, day, activity, stat)] = [0] * width
            elif len(vec) < width:
                vec.extend([0] * (width - len(vec)))
            for i in ix:
                vec[i] += v
        for nk in [k for k, vec in out.items() if not _trim(vec)]:
            del out[nk]
        return out

    def take_edges(self, at: Mapping[str, int]) -> dict[AggEdge, tuple[list[int], list[int]]]:
        """Per edge key, its (count, µs) change as two dense vectors over the positions ``at``
        (as ``take_nodes``); the collected edge changes are consumed."""
        out: dict[AggEdge, tuple[list[int], list[int]]] = {}
        places: dict[Vector, tuple[tuple[int, ...], int]] = {}
        edges = self.edges
        while edges:
            (kind, day, a, b, bk, segs), (count, us) = edges.popitem()
            if not (count or us):
                continue
            place = places.get(segs)
            if place is None:
                place = places[segs] = _place(segs, at)
            ix, width = place
            pair = out.get((kind, day, a, b, bk))
            if pair is None:
                pair = out[(kind, day, a, b, bk)] = ([0] * width, [0] * width)
            elif len(pair[0]) < width:
                pair[0].extend([0] * (width - len(pair[0])))
                pair[1].extend([0] * (width - len(pair[1])))
            counts, sums = pair
            for i in ix:
                counts[i] += count
                sums[i] += us
        for ek in [k for k, (c, u) in out.items() if not _trim_pair(c, u)]:
            del out[ek]
        return out

    def segments(self) -> set[str]:
        """Every segment row the changes count in, the edges' too (a change may move a
        duration without changing any node: a step's time moved by a late event)."""
        found: set[str] = set()
        for nk in self.nodes:
            found.update(nk[-1])
        for ek in self.edges:
            found.update(ek[-1])
        return found


def _place(segs: Vector, at: Mapping[str, int]) -> tuple[tuple[int, ...], int]:
    """The positions of segment rows ``segs`` and the vector width that holds them."""
    ix = tuple(at[seg] for seg in segs)
    return ix, 1 + max(ix)


def _trim(vec: list[int]) -> bool:
    """Drop trailing zeros; True when something is left."""
    while vec and not vec[-1]:
        vec.pop()
    return bool(vec)


def _trim_pair(counts: list[int], sums: list[int]) -> bool:
    """Drop the positions at the end where both vectors are zero; True when something is left."""
    while counts and not (counts[-1] or sums[-1]):
        counts.pop()
        sums.pop()
    return bool(counts)
