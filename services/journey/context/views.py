"""Read-side rules over a context document: masking, facts ledger, timeline items, purchases,
engagement, handoff summary, next step, route hint. Pure functions; every suggestion and hint
carries the reasons that produced it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.journey.context.rules import Doc, excerpt
from shared.privacy.masking import MASK, SEALED, Opener, masked, reveal_entry

__all__ = ["MASK", "masked"]


class Horizon:
    """While a view is rendered inside ``horizon()``: the earliest instant at which the clock
    alone would change what it shows (a fact expiring, "5 min ago" becoming "6 min ago").
    A rendered card may be served again until then and no later (``ContextCache.put_card``)."""

    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until: datetime | None = None  # None: nothing shown depends on the clock

    def note(self, at: datetime) -> None:
        if self.until is None or at < self.until:
            self.until = at


_HORIZON: ContextVar[Horizon | None] = ContextVar("waypoint_view_horizon", default=None)


@contextmanager
def horizon() -> Iterator[Horizon]:
    """Record, for what is rendered inside, when the clock alone would change it."""
    recorder = Horizon()
    token = _HORIZON.set(recorder)
    try:
        yield recorder
    finally:
        _HORIZON.reset(token)


def _note(at: datetime) -> None:
    recorder = _HORIZON.get()
    if recorder is not None:
        recorder.note(at)


def _expired(expires: str | None, now: datetime) -> bool:
    """Whether a fact expiring at ``expires`` has expired at ``now`` (an unexpired one notes
    its expiry on the horizon)."""
    if not expires:
        return False
    at = datetime.fromisoformat(expires)
    if at <= now:
        return True
    _note(at)
    return False


def _age(now: datetime, at: str | None) -> timedelta | None:
    return now - datetime.fromisoformat(at) if at else None


def _since(now: datetime, at: str | None) -> str:
    """``_ago`` of the time since ``at``, noting on the horizon when that text next changes."""
    if not at:
        return _ago(None)
    start = datetime.fromisoformat(at)
    delta = now - start
    text = _ago(delta)
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:  # "N min ago" (0 before ``at``): the next minute
        _note(start + timedelta(minutes=minutes + 1))
    elif minutes < 48 * 60:  # "N h ago": the next hour (48 h is "2 days ago")
        _note(start + timedelta(minutes=(minutes // 60 + 1) * 60))
    else:  # "N days ago": the next day
        _note(start + timedelta(minutes=(minutes // 1440 + 1) * 1440))
    return text


def _points(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}"


def _ago(delta: timedelta | None) -> str:
    if delta is None:
        return "at an unknown time"
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 0)} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // 1440} days ago"


def opened(entries: list[dict[str, Any]], opener: Opener) -> list[dict[str, Any]]:
    """Facts or timeline items with their sealed values opened (an admin revealing, audited):
    a message's text is cut to an excerpt as when it was stored in the clear."""
    out = []
    for entry in entries:
        if SEALED not in entry:
            out.append(entry)
            continue
        field = "excerpt" if "excerpt" in entry else "value"
        shown = reveal_entry(entry, opener, field=field)
        if field == "excerpt" and isinstance(shown.get(field), str) and not shown.get("masked"):
            shown[field] = excerpt(shown[field])
        out.append(shown)
    return out


def facts_ledger(doc: Doc, *, now: datetime, reveal: bool) -> list[dict[str, Any]]:
    """Every fact collected, newest first; sensitive values masked unless ``reveal``."""
    ledger = []
    for fact in reversed(doc["facts"]):
        entry = masked(fact, reveal=reveal)
        expires = fact.get("expires_at")
        entry["expired"] = _expired(expires, now)
        ledger.append(entry)
    return ledger


def timeline_items(items: list[dict[str, Any]], *, reveal: bool) -> list[dict[str, Any]]:
    """Timeline items as an agent sees them: a sensitive fact's value and a sensitive message's
    excerpt masked unless ``reveal``."""
    return [
        masked(item, reveal=reveal, field="excerpt" if "excerpt" in item else "value")
        for item in items
    ]


def purchases(doc: Doc) -> list[dict[str, Any]]:
    """The latest purchases, newest first (order id, amount, currency, channel, time, event)."""
    return [dict(x) for x in doc.get("purchases", [])]


def engagement(doc: Doc) -> dict[str, Any] | None:
    """The engagement score alerts last published, its threshold and any open churn alert,
    with ``at_risk`` when an alert is open or the score is under the threshold."""
    current = doc.get("engagement")
    if current is None:
        return None
    score, threshold = current.get("score"), current.get("threshold")
    below = score is not None and threshold is not None and score < threshold
    return {
        "score": score,
        "threshold": threshold,
        "scored_at": current.get("scored_at"),
        "segment": current.get("segment"),
        "contributions": current.get("contributions") or {},
        "alert": current.get("alert"),
        "at_risk": bool(current.get("alert")) or below,
        "version": current.get("version"),
    }


def customer_name(doc: Doc, known: dict[str, dict[str, Any]]) -> str | None:
    """The name an agent greets: a (non-sensitive) name fact, else the ``name`` /
    ``full_name`` trait, else first and last name traits (snake or camel case)."""
    fact = known.get("name") or known.get("full_name")
    if fact and not fact.get("sensitive") and fact.get("value") not in (None, ""):
        return str(fact["value"])
    traits = doc["traits"]

    def trait(*names: str) -> str | None:
        for name in names:
            value = (traits.get(name) or {}).get("value")
            if value not in (None, ""):
                return str(value).strip() or None
        return None

    full = trait("name", "full_name", "fullName")
    if full:
        return full
    parts = [trait("first_name", "firstName"), trait("last_name", "lastName")]
    return " ".join(x for x in parts if x) or None


def known_facts(doc: Doc, *, now: datetime) -> dict[str, dict[str, Any]]:
    """The latest unexpired value per fact name: what the agent must not ask again."""
    known: dict[str, dict[str, Any]] = {}
    for fact in doc["facts"]:  # oldest first, so later ones win
        if _expired(fact.get("expires_at"), now):
            continue
        known[fact["name"]] = fact
    return known


def open_cases(doc: Doc) -> list[dict[str, Any]]:
    cases = [c for c in doc["cases"].values() if c.get("open")]
    return sorted(cases, key=lambda c: c.get("updated_at") or "", reverse=True)


def pending_callbacks(doc: Doc) -> list[dict[str, Any]]:
    return [c for c in doc["callbacks"].values() if c.get("status") == "pending"]


def sentiment_trend(doc: Doc) -> dict[str, Any] | None:
    points = doc["sentiment"]
    if not points:
        return None
    values = [s["value"] for s in points]
    half = max(len(values) // 2, 1)
    earlier, later = values[:half], values[-half:]
    delta = sum(later) / len(later) - sum(earlier) / len(earlier)
    direction = "improving" if delta > 0.15 else "worsening" if delta < -0.15 else "stable"
    return {"latest": values[-1], "average": sum(values) / len(values), "trend": direction}


@dataclass(frozen=True)
class Derived:
    """What several parts of a card read from one document, computed once per render (each
    part would otherwise compute it again: open cases three times, engagement three times)."""

    cases: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]
    risk: dict[str, Any] | None
    trend: dict[str, Any] | None

    @staticmethod
    def of(doc: Doc) -> Derived:
        return Derived(
            open_cases(doc), pending_callbacks(doc), engagement(doc), sentiment_trend(doc)
        )


def case_agent(doc: Doc, case: dict[str, Any]) -> tuple[str | None, str | None]:
    """The agent (and team) who handled a case: named on the case, else on its interaction."""
    if case.get("agent_id"):
        return case["agent_id"], case.get("team")
    interaction = doc["interactions"].get(case.get("interaction_id") or "")
    if interaction and interaction.get("agent_id"):
        return interaction["agent_id"], interaction.get("team")
    return None, None


def next_steps(doc: Doc, *, now: datetime, derived: Derived | None = None) -> list[dict[str, str]]:
    """Suggested next steps, most pressing first; each says why."""
    d = derived or Derived.of(doc)
    steps: list[dict[str, str]] = []
    for cb in d.callbacks:
        steps.append(
            {
                "action": "complete the pending callback",
                "why": f"a callback was requested {_since(now, cb.get('requested_at'))} "
                "and is not completed",
            }
        )
    for case in d.cases[:2]:
        steps.append(
            {
                "action": f"continue case {case['case_id']}"
                + (f" ({case['reason']})" if case.get("reason") else ""),
                "why": f"the case is {case.get('status', 'open')}, last touched "
                f"{_since(now, case.get('updated_at'))}",
            }
        )
    risk = d.risk
    if risk and risk["alert"]:
        alert = risk["alert"]
        owner = f" ({alert['owner']})" if alert.get("owner") else ""
        steps.append(
            {
                "action": f"treat as a retention risk; keep the account owner{owner} informed",
                "why": f"churn alert {alert.get('status', 'open')} since "
                f"{_since(now, alert.get('opened_at'))}: engagement "
                f"{_points(risk['score'])} vs threshold {_points(risk['threshold'])} "
                f"({', '.join(alert.get('rules') or ['no rule'])})",
            }
        )
    last = doc["last_interaction"] or {}
    if last.get("type") == "contact.abandoned":
        steps.append(
            {
                "action": "acknowledge the dropped contact",
                "why": f"the last contact was abandoned {_since(now, last.get('at'))}",
            }
        )
    trend = d.trend
    if trend and (trend["latest"] <= -0.5 or trend["trend"] == "worsening"):
        steps.append(
            {
                "action": "offer an escalation or a supervisor",
                "why": f"sentiment is {trend['trend']} (latest {trend['latest']:+.2f})",
            }
        )
    csat, nps = doc["surveys"].get("csat"), doc["surveys"].get("nps")
    if (csat and csat["score"] <= 2) or (nps and nps["score"] <= 6):
        steps.append(
            {
                "action": "acknowledge the poor recent experience",
                "why": "latest survey: "
                + ", ".join(
                    f"{name.upper()} {s['score']:g}"
                    for name, s in (("csat", csat), ("nps", nps))
                    if s
                ),
            }
        )
    if not steps:
        steps.append(
            {"action": "greet and ask how to help", "why": "nothing is open for this customer"}
        )
    return steps


def churn_risk(risk: dict[str, Any] | None, *, now: datetime) -> str | None:
    """One line on the customer's churn risk (``risk``: ``engagement(doc)``), when there is one
    (an open alert, or a score under the threshold)."""
    if not risk or not risk["at_risk"]:
        return None
    line = (
        f"At risk of churning: engagement {_points(risk['score'])} "
        f"vs threshold {_points(risk['threshold'])}"
    )
    alert = risk["alert"]
    if alert:
        line += (
            f", churn alert {alert.get('status', 'open')} since "
            f"{_since(now, alert.get('opened_at'))}"
        )
    return line


def handoff_summary(
    doc: Doc, *, identities: list[dict[str, Any]], now: datetime, derived: Derived | None = None
) -> dict[str, Any]:
    """Who this is, why they likely call, what is open, what we know, and a next step."""
    d = derived or Derived.of(doc)
    known = known_facts(doc, now=now)
    strongest = identities[0] if identities else None
    who = customer_name(doc, known) or (
        f"{strongest['type']} {strongest['value']}" if strongest else "unknown customer"
    )
    risk = churn_risk(d.risk, now=now)
    cases = d.cases
    reason_src = (
        ("open case", cases[0].get("reason"))
        if cases and cases[0].get("reason")
        else ("last contact reason", (doc["last_contact_reason"] or {}).get("value"))
    )
    likely = reason_src[1]
    open_items = [
        f"case {c['case_id']} ({c.get('reason') or 'no reason'}, {c.get('status')})" for c in cases
    ] + [f"callback requested {c.get('requested_at')}" for c in d.callbacks]
    steps = next_steps(doc, now=now, derived=d)
    parts = [f"{who}."]
    if likely:
        parts.append(f"Likely contacting about: {likely} ({reason_src[0]}).")
    if open_items:
        parts.append("Open: " + "; ".join(open_items) + ".")
    if risk:
        parts.append(f"{risk}.")
    if known:
        parts.append("Already known, do not ask again: " + ", ".join(sorted(known)) + ".")
    parts.append(f"Suggested: {steps[0]['action']} — {steps[0]['why']}.")
    return {
        "who": who,
        "likely_reason": likely,
        "likely_reason_source": reason_src[0] if likely else None,
        "open": open_items,
        "do_not_ask": sorted(known),
        "churn_risk": risk,
        "next_step": steps[0],
        "next_steps": steps,
        "text": " ".join(parts),
    }


def route_hint(
    doc: Doc, *, now: datetime, skip_ivr_hours: float, preferred_agent_hours: float
) -> dict[str, Any]:
    """Preferred agent/team and whether to skip the IVR menu, with the reasons."""
    reasons: list[str] = []
    agent = team = None
    skip = False
    cases = open_cases(doc)
    recent_case = None
    for case in cases:
        age = _age(now, case.get("updated_at"))
        if age is not None and age <= timedelta(hours=skip_ivr_hours):
            recent_case = case
            break
    if recent_case is not None:
        skip = True
        reasons.append(
            f"open case {recent_case['case_id']} ({recent_case.get('reason') or 'no reason'}) "
            f"touched {_since(now, recent_case.get('updated_at'))}, "
            f"within {skip_ivr_hours:g} h: skip the IVR menu"
        )
    for case in ([recent_case] if recent_case else []) + cases:
        agent, team = case_agent(doc, case)
        if agent:
            reasons.append(f"agent {agent} handled open case {case['case_id']}")
            break
    if agent is None and doc["last_agent"]:
        last = doc["last_agent"]
        age = _age(now, last.get("at"))
        if age is not None and age <= timedelta(hours=preferred_agent_hours):
            agent, team = last["agent_id"], last.get("team")
            reasons.append(
                f"agent {agent} handled the last interaction {_ago(age)} "
                f"on {last.get('channel') or 'an unknown channel'}"
            )
    if not skip:
        reasons.append(
            f"no open case touched within {skip_ivr_hours:g} h: keep the IVR menu"
            if not cases
            else f"open cases exist but none touched within {skip_ivr_hours:g} h: keep the IVR menu"
        )
    return {
        "preferred_agent": agent,
        "preferred_team": team,
        "skip_ivr": skip,
        "open_case": recent_case["case_id"] if recent_case else None,
        "reasons": reasons,
    }
