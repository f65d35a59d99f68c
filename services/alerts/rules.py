"""Churn rules as pure functions: scores and rule state in, new rule state and decisions out.

Each rule keeps, per customer: ``armed`` (hysteresis: after firing it re-arms only once the score
is back above threshold + margin, or for a drop, above the score it fired at + margin),
``last_fired_at`` (cooldown), ``below_since`` (persistence) and ``fired_score``.
One customer has at most one open alert: rules that fire while it is open are added to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
    today = score
    kept = []
    for d, s in peaks:
        if d == day:
            today = max(today, s)
        elif d >= horizon:
            kept.append([d, s])
    kept.append([day, today])
    return kept


def peak_within(peaks: list[list[float]], days: int, now: datetime) -> float | None:
    since = (int(now.timestamp()) // DAY_SECONDS - (days - 1)) * DAY_SECONDS
    best = None
    for d, s in peaks:
        if d >= since and (best is None or s > best):
            best = s
    return best


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
    customer's open alert (None when there is none). Times in rule state are epoch seconds."""
    peaks = record_peak(peaks, score, now)
    threshold, margin = thresholds.alert_below, thresholds.rearm_margin
    enabled = thresholds.rules
    now_s = now.timestamp()
    cooldown_s = thresholds.cooldown_hours * 3600.0
    below = score < threshold
    new_states: dict[str, dict[str, Any]] = {}
    fired: list[Rule] = []
    for rule, key in _RULES:
        st = dict(states.get(key) or _ARMED)
        if rule is Rule.below_for_days:
            st["below_since"] = (st.get("below_since") or now_s) if below else None
        armed = st.get("armed", True)
        if not armed:
            fired_score = st.get("fired_score")
            if rule is Rule.score_drop and fired_score is not None:
                rearm_at = fired_score + margin
            else:
                rearm_at = threshold + margin
            if score >= rearm_at:
                st["armed"] = armed = True
        if not armed or rule not in enabled:
            new_states[key] = st
            continue
        if rule is Rule.below_threshold:
            condition = below
        elif rule is Rule.below_for_days:
            since = st["below_since"]
            condition = since is not None and now_s - since >= thresholds.below_days * DAY_SECONDS
        else:
            peak = peak_within(peaks, thresholds.drop_days, now)
            condition = peak is not None and peak - score >= thresholds.drop_points
        if condition:
            last = st.get("last_fired_at")
            if last is None or now_s - last >= cooldown_s:
                st.update(armed=False, last_fired_at=now_s, fired_score=score)
                fired.append(rule)
        new_states[key] = st
    resolve = bool(open_rules) and all(
        new_states.get(r, _ARMED).get("armed", True) for r in open_rules or []
    )
    return Evaluation(states=new_states, fired=fired, resolve=resolve and not fired, peaks=peaks)


_RULES = tuple((rule, rule.value) for rule in Rule)  # keys stay plain strings (JSON)
_ARMED: dict[str, Any] = {"armed": True}
