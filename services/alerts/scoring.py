"""Engagement scoring as pure functions: aggregates in, aggregates / a score out.

Decayed counters (activity, repeat contacts, friction) are stored with one reference time
``decayed_at``: a counter's value at ``now`` is ``value * 0.5 ** ((now - decayed_at) / half_life)``.
An event at time ``t`` adds its weight decayed from ``t``, so arrival order does not matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from services.alerts.model import Factor, Params

# What counts as the customer engaging (product use, logins, contacts they started).
ACTIVITY_WEIGHTS: dict[str, float] = {
    "product.used": 1.0,
    "contact.started": 1.0,  # inbound only
    "message.received": 0.5,
    "callback.requested": 0.5,
    "survey.responded": 0.5,
    "feedback.submitted": 0.5,
    "purchase.completed": 2.0,
    "customer.renewed": 2.0,
}
FRICTION_EVENTS = {"contact.transferred", "contact.abandoned"}
SURVEY_SCALES = {"csat": (1.0, 5.0, False), "nps": (0.0, 10.0, False), "ces": (1.0, 7.0, True)}
EWMA_ALPHA = 0.4
MAX_OPEN_CASES = 50
DAY = 86_400.0


@dataclass(slots=True)
class Aggregates:
    activity: float = 0.0
    repeats: float = 0.0
    friction: float = 0.0
    decayed_at: datetime | None = None
    seats_active: int | None = None
    seats_purchased: int | None = None
    open_cases: list[str] = field(default_factory=list)
    last_contact_at: datetime | None = None
    satisfaction: float | None = None
    sentiment: float | None = None
    last_event_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    contributions: dict[str, float]  # points per factor; they sum to ``value``
    factors: dict[str, float]  # each factor's value in [0, 1]
    max_points: dict[str, float]  # points a factor gives at 1.0


def _half(seconds: float, half_life_days: float) -> float:
    return 0.5 ** (seconds / (half_life_days * DAY)) if seconds > 0 else 1.0


def decay_to(agg: Aggregates, now: datetime, params: Params) -> Aggregates:
    """The aggregates with their decayed counters brought forward to ``now``."""
    if agg.decayed_at is None or now <= agg.decayed_at:
        return replace(agg, decayed_at=agg.decayed_at or now)
    elapsed = (now - agg.decayed_at).total_seconds()
    return replace(
        agg,
        activity=agg.activity * _half(elapsed, params.activity_half_life_days),
        repeats=agg.repeats * _half(elapsed, params.friction_half_life_days),
        friction=agg.friction * _half(elapsed, params.friction_half_life_days),
        decayed_at=now,
    )


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_ALPHA * (new - old)


def apply_event(agg: Aggregates, event: dict[str, Any], params: Params) -> Aggregates:
    """Fold one normalized event (CloudEvent dict) into the aggregates."""
    kind = str(event.get("type", ""))
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}
    at = parse_time(event.get("time"))
    if at is None:
        return agg
    agg = decay_to(agg, max(at, agg.decayed_at or at), params)
    assert agg.decayed_at is not None
    age = (agg.decayed_at - at).total_seconds()
    activity_decay = _half(age, params.activity_half_life_days)
    friction_decay = _half(age, params.friction_half_life_days)

    weight = ACTIVITY_WEIGHTS.get(kind, 0.0)
    if kind == "contact.started" and data.get("direction", "inbound") != "inbound":
        weight = 0.0
    if weight:
        agg.activity += weight * activity_decay
    if kind == "contact.started":
        window = timedelta(hours=params.repeat_window_hours)
        if agg.last_contact_at is not None and abs(at - agg.last_contact_at) <= window:
            agg.repeats += friction_decay
        if agg.last_contact_at is None or at > agg.last_contact_at:
            agg.last_contact_at = at
    elif kind in FRICTION_EVENTS:
        agg.friction += friction_decay
    elif kind == "product.used":
        active, purchased = data.get("active_seats"), data.get("purchased_seats")
        if isinstance(active, int):
            agg.seats_active = active
        if isinstance(purchased, int):
            agg.seats_purchased = purchased
    elif kind == "case.opened" and data.get("case_id"):
        case_id = str(data["case_id"])[:128]
        if case_id not in agg.open_cases:
            agg.open_cases = [*agg.open_cases, case_id][-MAX_OPEN_CASES:]
    elif kind in {"case.resolved", "case.updated"} and data.get("case_id"):
        case_id = str(data["case_id"])[:128]
        closed = kind == "case.resolved" or str(data.get("status", "")).lower() in {
            "resolved",
            "closed",
        }
        if closed:
            agg.open_cases = [c for c in agg.open_cases if c != case_id]
    elif kind == "survey.responded":
        scale = SURVEY_SCALES.get(str(data.get("survey")))
        score = data.get("score")
        if scale and isinstance(score, int | float):
            low, high, inverted = scale
            value = min(1.0, max(0.0, (float(score) - low) / (high - low)))
            agg.satisfaction = _ewma(agg.satisfaction, 1.0 - value if inverted else value)
    if kind == "message.received" and isinstance(data.get("sentiment"), int | float):
        agg.sentiment = _ewma(agg.sentiment, (float(data["sentiment"]) + 1.0) / 2.0)
    if agg.last_event_at is None or at > agg.last_event_at:
        agg.last_event_at = at
    return agg


# Plain-string keys (a ``Factor`` is a ``StrEnum``: it hashes and compares as its value).
_ACTIVITY, _UTILISATION, _CASES = (
    Factor.activity.value,
    Factor.utilisation.value,
    Factor.cases.value,
)
_FRICTION, _SATISFACTION = Factor.friction.value, Factor.satisfaction.value
_SENTIMENT = Factor.sentiment.value


def factor_values(agg: Aggregates, params: Params, now: datetime | None = None) -> dict[str, float]:
    """Each factor in [0, 1] at ``now`` (default: the aggregates' own reference time); factors
    with no data at all are left out (not counted as 0)."""
    activity, repeats, friction = agg.activity, agg.repeats, agg.friction
    if now is not None and agg.decayed_at is not None and now > agg.decayed_at:
        elapsed = (now - agg.decayed_at).total_seconds()
        activity *= _half(elapsed, params.activity_half_life_days)
        slow = _half(elapsed, params.friction_half_life_days)
        repeats, friction = repeats * slow, friction * slow
    values = {
        _ACTIVITY: min(1.0, activity / params.activity_target),
        _CASES: 1.0 - min(1.0, (len(agg.open_cases) + repeats) / params.case_limit),
        _FRICTION: 1.0 - min(1.0, friction / params.friction_limit),
    }
    if agg.seats_purchased:
        values[_UTILISATION] = min(1.0, (agg.seats_active or 0) / agg.seats_purchased)
    if agg.satisfaction is not None:
        values[_SATISFACTION] = agg.satisfaction
    if agg.sentiment is not None:
        values[_SENTIMENT] = agg.sentiment
    return values


def score(agg: Aggregates, weights: dict[Factor, float], params: Params, now: datetime) -> Score:
    """Score 0–100 at ``now``: the weighted mean of the factors that have data."""
    values = factor_values(agg, params, now)
    w: dict[str, float] = weights  # type: ignore[assignment]  # StrEnum keys look up by value
    total = sum(w.get(f, 0.0) for f in values)
    if total <= 0:
        return Score(0.0, {}, {f: round(v, 4) for f, v in values.items()}, {})
    # Each factor's share of 100 points is w / total, computed as a ratio first: 100 / total
    # overflows to inf for a tiny (denormal) total weight.
    share = {f: 100.0 * (w.get(f, 0.0) / total) for f in values}
    points = {f: share[f] * v for f, v in values.items()}
    return Score(
        value=round(min(100.0, max(0.0, math.fsum(points.values()))), 2),
        contributions={f: round(p, 2) for f, p in points.items()},
        factors={f: round(v, 4) for f, v in values.items()},
        max_points={f: round(share[f], 2) for f in values},
    )


def merge(into: Aggregates, other: Aggregates, params: Params) -> Aggregates:
    """Fold ``other`` (a customer merged away) into ``into``: counters add, cases unite."""
    ref = max((a.decayed_at for a in (into, other) if a.decayed_at), default=None)
    if ref is None:
        return into
    a, b = decay_to(into, ref, params), decay_to(other, ref, params)

    def latest(x: datetime | None, y: datetime | None) -> datetime | None:
        return max((t for t in (x, y) if t is not None), default=None)

    def mean(x: float | None, y: float | None) -> float | None:
        known = [v for v in (x, y) if v is not None]
        return sum(known) / len(known) if known else None

    return Aggregates(
        activity=a.activity + b.activity,
        repeats=a.repeats + b.repeats,
        friction=a.friction + b.friction,
        decayed_at=ref,
        seats_active=a.seats_active if a.seats_active is not None else b.seats_active,
        seats_purchased=a.seats_purchased if a.seats_purchased is not None else b.seats_purchased,
        open_cases=list(dict.fromkeys([*a.open_cases, *b.open_cases]))[-MAX_OPEN_CASES:],
        last_contact_at=latest(a.last_contact_at, b.last_contact_at),
        satisfaction=mean(a.satisfaction, b.satisfaction),
        sentiment=mean(a.sentiment, b.sentiment),
        last_event_at=latest(a.last_event_at, b.last_event_at),
    )


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else None
    return None
