"""Churn rules as pure functions: scores and rule state in, new rule state and decisions out.

Each rule keeps, per customer: ``armed`` (hysteresis: after firing it re-arms only once the score
is back above threshold + margin, or for a drop, above the score it fired at + margin),
``last_fired_at`` (cooldown), ``below_since`` (persistence) and ``fired_score``.
One customer has at most one open alert: rules that fire while it is open are added to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.alerts.model import Rule, Thresholds

DAY_SECONDS = 86_400
MAX_DROP_WINDOW_DAYS = 30


@dataclass(frozen=True)
class Evaluation:
    states: dict[str, dict[str, Any]]
    fired: list[Rule] = field(default_factory=list)
    resolve: bool = False  # the open alert's rules have all recovered
    peaks: list[list[float]] = field(default_factory=list)


def record_peak(peaks: list[list[float]], score: float, now: datetime) -> list[list[float]]:
    """Daily maxima ``[[day_start_epoch, max_score], …]`` for the drop rule, last 30 days."""
    day = float(int(now.timestamp()) // DAY_SECONDS * DAY_SECONDS)
    horizon = day - MAX_DROP_WINDOW_DAYS * DAY_SECONDS
    kept = [[d, s] for d, s in peaks if horizon <= d != day]
    today = max([score, *(s for d, s in peaks if d == day)])
    return [*kept, [day, today]]


def peak_within(peaks: list[list[float]], days: int, now: datetime) -> float | None:
    day = int(now.timestamp()) // DAY_SECONDS * DAY_SECONDS
    since = day - (days - 1) * DAY_SECONDS
    recent = [s for d, s in peaks if d >= since]
    return max(recent) if recent else None


def _ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return None


def evaluate(
    thresholds: Thresholds,
    states: dict[str, dict[str, Any]],
    *,
    score: float,
    peaks: list[list[float]],
    now: datetime,
    open_rules: list[str] | None,
) -> Evaluation:
    """Apply every enabled rule to ``score`` at ``now``. ``open_rules`` are the rules of the
    customer's open alert (None when there is none)."""
    peaks = record_peak(peaks, score, now)
    threshold, margin = thresholds.alert_below, thresholds.rearm_margin
    cooldown = timedelta(hours=thresholds.cooldown_hours)
    new_states: dict[str, dict[str, Any]] = {}
    fired: list[Rule] = []
    for rule in Rule:
        st = dict(states.get(rule.value) or {"armed": True})
        if rule is Rule.below_for_days:
            below_since = _ts(st.get("below_since"))
            st["below_since"] = (below_since or now).isoformat() if score < threshold else None
        if not st.get("armed", True):
            rearm_at = threshold + margin
            if rule is Rule.score_drop and st.get("fired_score") is not None:
                rearm_at = float(st["fired_score"]) + margin
            if score >= rearm_at:
                st["armed"] = True
        if (
            rule in thresholds.rules
            and st.get("armed", True)
            and _condition(rule, thresholds, st, score=score, peaks=peaks, now=now)
        ):
            last = _ts(st.get("last_fired_at"))
            if last is None or now - last >= cooldown:
                st.update(armed=False, last_fired_at=now.isoformat(), fired_score=score)
                fired.append(rule)
        new_states[rule.value] = st
    resolve = bool(open_rules) and all(
        new_states.get(r, {}).get("armed", True) for r in open_rules or []
    )
    return Evaluation(states=new_states, fired=fired, resolve=resolve and not fired, peaks=peaks)


def _condition(
    rule: Rule,
    thresholds: Thresholds,
    st: dict[str, Any],
    *,
    score: float,
    peaks: list[list[float]],
    now: datetime,
) -> bool:
    if rule is Rule.below_threshold:
        return score < thresholds.alert_below
    if rule is Rule.below_for_days:
        since = _ts(st.get("below_since"))
        return since is not None and now - since >= timedelta(days=thresholds.below_days)
    peak = peak_within(peaks, thresholds.drop_days, now)
    return peak is not None and peak - score >= thresholds.drop_points
