"""The agent's context card as the pages show it: the API's context view (name, engagement and
churn alert, recent purchases …), the route hint and the timeline, shaped for the templates.
Pure: values in, a dict out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.journey.config import JourneySettings
from services.journey.context import service, views
from shared.events import Channel, IdentifierType, Verification

IDENTIFIER_TYPES = [t.value for t in IdentifierType]
CHANNELS = [c.value for c in Channel]
VERIFICATIONS = [v.value for v in Verification if v is not Verification.none]
# "expires in" choices of the record-a-fact form (a duration: no time zone to get wrong).
EXPIRY_CHOICES = {"": "never", "1d": "1 day", "7d": "7 days", "30d": "30 days", "365d": "1 year"}
STRONG = {"login", "otp", "ivr_pin", "document", "agent"}


def strength_class(verified_by: str | None) -> str:
    if verified_by in STRONG:
        return "strong"
    if verified_by in {None, "none", "self_asserted", "cookie"}:
        return "weak"
    return ""


def card(
    found: service.Found,
    *,
    now: datetime,
    reveal: bool,
    settings: JourneySettings,
    timeline: dict[str, Any],
) -> dict[str, Any]:
    """Everything the card shows, in the order an agent reads it."""
    view = service.context_view(found, now=now, reveal=reveal)
    hint = views.route_hint(
        found.doc,
        now=now,
        skip_ivr_hours=settings.skip_ivr_hours,
        preferred_agent_hours=settings.preferred_agent_hours,
    )
    surveys = view["surveys"]
    return {
        "customer_id": view["customer_id"],
        "version": view["version"],
        "who": view["summary"]["who"],
        "identities": [
            {**i, "strength_class": strength_class(i.get("verified_by"))}
            for i in view["identities"]
        ],
        "traits": {name: t.get("value") for name, t in sorted(view["traits"].items())},
        "ambiguous": view.get("ambiguous"),
        "merged_from": view.get("merged_from"),
        "route": hint,
        "open_cases": view["open_cases"],
        "facts": view["facts"],
        "revealed": reveal,
        "has_sensitive": any(f.get("sensitive") for f in view["facts"]),
        "last_agent": view["last_agent"],
        "summary": view["summary"],
        "purchases": view["purchases"],
        "engagement": view["engagement"],
        "timeline": timeline["items"],
        "timeline_next": timeline["next_cursor"],
        "csat": surveys.get("csat"),
        "nps": surveys.get("nps"),
        "ces": surveys.get("ces"),
        "sentiment": view["sentiment"],
        "channels": view["channels"],
        "pending_callbacks": view["pending_callbacks"],
        "first_seen_at": view["first_seen_at"],
        "last_seen_at": view["last_seen_at"],
    }
