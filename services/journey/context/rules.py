"""The per-customer context document and the pure reducer that maintains it.

The worker folds each applied event into one JSON document per customer (one row, one indexed
read for a screen pop). The reducer compares event times, never arrival order, so "last agent"
is the agent of the latest interaction even when events arrive late or out of order; folding
the same events in any order gives the same document (a merge or split rebuilds from events).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.events import Envelope, EventType, verification_strength
from shared.events import payloads as p

Doc = dict[str, Any]
RECENT_ITEMS = 10
MAX_FACTS = 200
MAX_INTERACTIONS = 30
MAX_SENTIMENT = 20
MAX_PURCHASES = 5
# A timeline item carries at most this much of a message's text or a fact's value (the facts
# ledger has the whole value; the event, the whole text).
EXCERPT_CHARS = 160

INTERACTION_TYPES = {
    EventType.contact_started,
    EventType.contact_ended,
    EventType.contact_queued,
    EventType.contact_abandoned,
    EventType.agent_joined,
    EventType.contact_transferred,
    EventType.message_received,
    EventType.message_sent,
    EventType.ivr_step,
    EventType.bot_step,
    EventType.callback_requested,
    EventType.callback_completed,
}


def empty() -> Doc:
    return {
        "event_count": 0,
        "first_seen_at": None,
        "last_seen_at": None,
        "traits": {},
        "facts": [],
        "cases": {},
        "interactions": {},
        "last_interaction": None,
        "last_agent": None,
        "last_contact_reason": None,
        "callbacks": {},
        "surveys": {},
        "sentiment": [],
        "channels": {},
        "recent": [],
        "identities": {},
        "purchases": [],
    }


def _field(data: p.EventData, name: str) -> Any:
    """A declared field of this payload type, else None (no pydantic ``__getattr__`` detour)."""
    return data.__dict__.get(name)


def iso(t: datetime | None) -> str | None:
    """``t.isoformat()``. A UTC time (every event time, once parsed) is written by orjson: the
    same text (``+00:00``, microseconds only when there are any), ~3× cheaper; the fold and the
    worker format each event's time with it."""
    if t is None:
        return None
    if t.tzinfo is UTC:
        return orjson.dumps(t)[1:-1].decode()
    return t.isoformat()


def _later(a: str | None, b: str | None) -> bool:
    """True when ``a`` (an ISO time) is at or after ``b``; ISO-8601 UTC strings sort as times."""
    return b is None or (a is not None and a >= b)


def event_verification(env: Envelope) -> str | None:
    """How strongly this event's sender was identified: its best verified identifier."""
    best = max(env.identifiers, key=lambda i: verification_strength(i.verified_by))
    return best.verified_by.value if best.verified_by else None


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut at a word boundary to at most ``limit`` characters (``…``)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if flat[limit - 1] != " ":  # the cut splits a word: drop its start, unless it is long
        space = cut.rfind(" ")
        cut = cut[:space] if space > limit // 2 else cut
    return cut.rstrip() + "…"


def _sealed(data: p.EventData, field: str = "value") -> dict[str, Any]:
    """``{"sealed": token}`` when ingest sealed the sensitive ``field`` (shared/privacy)."""
    sealed = (data.model_extra or {}).get("sealed")
    token = sealed.get(field) if isinstance(sealed, dict) else None
    return {"sealed": token} if isinstance(token, str) else {}


def _details(env: Envelope) -> dict[str, Any]:
    """What an agent reads in a timeline item beyond its type: a message's excerpt, a fact's
    name and value, a purchase's order. Sensitive ones are stored as they are and masked by the
    read side (``views.masked``), unless an admin reveals them."""
    d = env.data
    if isinstance(d, p.Message):
        if not d.text:
            return {}
        return {"excerpt": excerpt(d.text), "sensitive": d.sensitive or None, **_sealed(d, "text")}
    if isinstance(d, p.FactCollected):
        value = excerpt(d.value) if isinstance(d.value, str) else d.value
        return {"fact": d.name, "value": value, "sensitive": d.sensitive or None, **_sealed(d)}
    if isinstance(d, p.PurchaseCompleted):
        return {"order_id": d.order_id, "amount": d.amount, "currency": d.currency}
    return {}


def timeline_item(env: Envelope) -> dict[str, Any]:
    """The timeline view of one event: channel, touchpoint, department, agent, team, outcome,
    and its details (message excerpt, fact, order)."""
    return _timeline_item(env, iso(env.time))


def _timeline_item(env: Envelope, at: str | None) -> dict[str, Any]:
    d = env.data
    outcome = (
        _field(d, "disposition")
        or _field(d, "outcome")
        or _field(d, "status")
        or (f"abandoned in {d.where}" if isinstance(d, p.ContactAbandoned) else None)
    )
    item = {
        "event_id": env.id,
        "type": str(env.type),
        "time": at,
        "channel": d.channel.value if d.channel else None,
        "touchpoint": d.touchpoint,
        "department": d.department,
        "agent_id": d.agent_id,
        "team": d.team,
        "interaction_id": d.interaction_id,
        "outcome": outcome,
        "reason": _field(d, "contact_reason") or _field(d, "reason"),
        **_details(env),
    }
    return {k: v for k, v in item.items() if v is not None}


def apply_event(doc: Doc, env: Envelope) -> Doc:
    """Fold one event into the document (mutates and returns it)."""
    return apply_events(doc, [env])


def _recent_key(item: dict[str, Any]) -> tuple[str, str]:
    return item["time"], item["event_id"]


def apply_events(doc: Doc, envs: Sequence[Envelope]) -> Doc:
    """Fold events into the document, in the order given (mutates and returns it): the same
    document as ``apply_event`` for each in turn. The recent list is merged once
    for them all (the newest ``RECENT_ITEMS`` of the old and new items: what cutting after each
    event keeps too, as items are ordered by (time, event id))."""
    items = {env.id: _fold(doc, env) for env in envs}  # an id seen twice: its last item
    recent = [r for r in doc["recent"] if r["event_id"] not in items]
    recent += items.values()
    recent.sort(key=_recent_key, reverse=True)
    doc["recent"] = recent[:RECENT_ITEMS]
    return doc


def _fold(doc: Doc, env: Envelope) -> dict[str, Any]:
    """Fold one event, except into the recent list: its timeline item, for that list."""
    d = env.data
    at = iso(env.time)
    channel = d.channel.value if d.channel else None
    doc["event_count"] += 1
    if doc["first_seen_at"] is None or (at or "") < doc["first_seen_at"]:
        doc["first_seen_at"] = at
    if _later(at, doc["last_seen_at"]):
        doc["last_seen_at"] = at
    if channel:
        doc["channels"][channel] = doc["channels"].get(channel, 0) + 1
    item = _timeline_item(env, at)

    if env.type in INTERACTION_TYPES:
        _interaction(doc, env, at, channel)
    handler = _HANDLERS.get(env.type)
    if handler is not None:
        handler(doc, env, at, channel)
    return item


def _interaction(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    d = env.data
    reason = _field(d, "contact_reason")
    if _later(at, (doc["last_interaction"] or {}).get("at")):
        doc["last_interaction"] = {
            "at": at,
            "type": str(env.type),
            "channel": channel,
            "touchpoint": d.touchpoint,
            "department": d.department,
            "interaction_id": d.interaction_id,
        }
    if reason and _later(at, (doc["last_contact_reason"] or {}).get("at")):
        doc["last_contact_reason"] = {"value": reason, "at": at, "channel": channel}
    agent = d.agent_id or _field(d, "to_agent")
    if agent and env.type != EventType.message_received:
        if _later(at, (doc["last_agent"] or {}).get("at")):
            doc["last_agent"] = {
                "agent_id": agent,
                "team": d.team or _field(d, "to_team"),
                "department": d.department,
                "channel": channel,
                "interaction_id": d.interaction_id,
                "at": at,
            }
    if d.interaction_id:
        known = doc["interactions"].get(d.interaction_id) or {"channel": channel, "started_at": at}
        if agent and _later(at, known.get("agent_at")):
            known.update(agent_id=agent, team=d.team or _field(d, "to_team"), agent_at=at)
        if _later(at, known.get("at")):
            known["at"] = at
        if at and (known.get("started_at") is None or at < known["started_at"]):
            known["started_at"] = at
        doc["interactions"][d.interaction_id] = known
        if len(doc["interactions"]) > MAX_INTERACTIONS:
            oldest = min(doc["interactions"], key=lambda k: doc["interactions"][k].get("at") or "")
            del doc["interactions"][oldest]


def _fact(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    d = env.data
    assert isinstance(d, p.FactCollected)
    verified = d.verified_by.value if d.verified_by else event_verification(env)
    entry = {
        "name": d.name,
        "value": d.value,
        "sensitive": d.sensitive,
        **_sealed(d),
        "channel": channel,
        "touchpoint": d.touchpoint,
        "agent_id": d.agent_id,
        "at": at,
        "verified_by": verified,
        "expires_at": iso(d.expires_at),
        "event_id": env.id,
        "source": env.source,
    }
    facts = [f for f in doc["facts"] if f["event_id"] != env.id] + [entry]
    facts.sort(key=lambda f: (f["at"] or "", f["event_id"]))
    doc["facts"] = facts[-MAX_FACTS:]


def _case(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    d = env.data
    assert isinstance(d, p.CaseEvent)
    case = doc["cases"].get(d.case_id) or {"case_id": d.case_id, "opened_at": None}
    if env.type == EventType.case_opened and (
        case["opened_at"] is None or (at or "") < case["opened_at"]
    ):
        case["opened_at"] = at
        case.setdefault("channel", channel)
        case["interaction_id"] = d.interaction_id or case.get("interaction_id")
    for name in ("reason", "priority"):
        value = getattr(d, name)
        if value is not None and _later(at, case.get(f"{name}_at")):
            case[name], case[f"{name}_at"] = value, at
    if d.agent_id and _later(at, case.get("agent_at")):
        case.update(agent_id=d.agent_id, team=d.team, agent_at=at)
    if _later(at, case.get("updated_at")):
        case["updated_at"] = at
        status = d.status or {
            EventType.case_opened: "open",
            EventType.case_resolved: "resolved",
        }.get(env.type, case.get("status", "open"))
        case["status"] = status
        case["open"] = env.type != EventType.case_resolved and status not in CLOSED_STATUSES
    if case.get("interaction_id") is None and d.interaction_id:
        case["interaction_id"] = d.interaction_id
    doc["cases"][d.case_id] = case


CLOSED_STATUSES = {"resolved", "closed", "cancelled", "canceled", "solved", "done"}


def _callback(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    d = env.data
    key = d.interaction_id or env.id
    cb = doc["callbacks"].get(key) or {"key": key}
    if isinstance(d, p.CallbackRequested):
        cb.update(
            requested_at=at,
            requested_for=iso(d.requested_for),
            number=d.number,
            channel=channel,
        )
        cb.setdefault("status", "pending")
    else:
        assert isinstance(d, p.CallbackCompleted)
        cb.update(status="completed", completed_at=at, outcome=d.outcome)
    doc["callbacks"][key] = cb


def _survey(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    d = env.data
    assert isinstance(d, p.SurveyResponded)
    if _later(at, (doc["surveys"].get(d.survey) or {}).get("at")):
        doc["surveys"][d.survey] = {
            "score": d.score,
            "comment": d.comment,
            "at": at,
            "channel": channel,
            "touchpoint": d.touchpoint,
            "interaction_id": d.about_interaction_id or d.interaction_id,
        }


def _message(doc: Doc, env: Envelope, at: str | None, _channel: str | None) -> None:
    d = env.data
    assert isinstance(d, p.Message)
    if d.sentiment is not None and env.type == EventType.message_received:
        points = [s for s in doc["sentiment"] if s["event_id"] != env.id]
        points.append({"at": at, "value": d.sentiment, "event_id": env.id})
        points.sort(key=lambda s: (s["at"], s["event_id"]))
        doc["sentiment"] = points[-MAX_SENTIMENT:]


def _purchase(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    d = env.data
    assert isinstance(d, p.PurchaseCompleted)
    entry = {
        "event_id": env.id,
        "at": at,
        "order_id": d.order_id,
        "amount": d.amount,
        "currency": d.currency,
        "channel": channel,
    }
    purchases = [x for x in doc.get("purchases", []) if x["event_id"] != env.id] + [entry]
    purchases.sort(key=lambda x: (x["at"] or "", x["event_id"]), reverse=True)
    doc["purchases"] = purchases[:MAX_PURCHASES]


def _traits(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    d = env.data
    assert isinstance(d, p.IdentityLinked)
    verified = event_verification(env)
    for name, value in d.traits.items():
        if _later(at, (doc["traits"].get(name) or {}).get("at")):
            doc["traits"][name] = {
                "value": value,
                "channel": channel,
                "at": at,
                "verified_by": verified,
                "event_id": env.id,
            }


def _outcome(doc: Doc, env: Envelope, at: str | None, channel: str | None) -> None:
    name = "churned" if env.type == EventType.customer_churned else "renewed"
    current = doc["traits"].get("lifecycle_stage") or {}
    if _later(at, current.get("at")):
        doc["traits"]["lifecycle_stage"] = {
            "value": name,
            "channel": channel,
            "at": at,
            "verified_by": None,
            "event_id": env.id,
        }


_HANDLERS = {
    EventType.fact_collected: _fact,
    EventType.case_opened: _case,
    EventType.case_updated: _case,
    EventType.case_resolved: _case,
    EventType.callback_requested: _callback,
    EventType.callback_completed: _callback,
    EventType.survey_responded: _survey,
    EventType.message_received: _message,
    EventType.identity_linked: _traits,
    EventType.customer_churned: _outcome,
    EventType.customer_renewed: _outcome,
    EventType.purchase_completed: _purchase,
}


def rebuild(events: list[Envelope], *, engagement: dict[str, Any] | None = None) -> Doc:
    """The document from scratch (after a merge or split). ``engagement`` is not derived from
    events (alerts publishes it): the current one is kept."""
    doc = apply_events(empty(), sorted(events, key=lambda e: (e.time, e.id)))
    if engagement is not None:
        doc["engagement"] = engagement
    return doc


def fold_engagement(doc: Doc, engagement: dict[str, Any]) -> bool:
    """Keep the customer's engagement (a whole snapshot from alerts) unless the document already
    holds this version or a newer one: replays and late messages change nothing. True when the
    document changed."""
    current = doc.get("engagement")
    if current is not None and int(current.get("version", 0)) >= int(engagement["version"]):
        return False
    doc["engagement"] = engagement
    return True


def merge_identity(doc: Doc, key: str, link: dict[str, Any]) -> None:
    """Keep the customer's identifiers (with provenance) in the document for one-query reads."""
    known = doc.setdefault("identities", {}).get(key)
    if known is None:
        doc["identities"][key] = dict(link)
        return
    if link["strength"] > known["strength"]:
        known["strength"], known["verified_by"] = link["strength"], link["verified_by"]
    known["first_seen_at"] = min(known["first_seen_at"], link["first_seen_at"])
    known["last_seen_at"] = max(known["last_seen_at"], link["last_seen_at"])


def identity_list(doc: Doc) -> list[dict[str, Any]]:
    """Strongest first, then most recently seen."""
    items = sorted(
        doc.get("identities", {}).values(), key=lambda i: i["last_seen_at"], reverse=True
    )
    return sorted(items, key=lambda i: i["strength"], reverse=True)


def trait_snapshot(doc: Doc) -> dict[str, Any]:
    """Plain trait values, for the activity contract."""
    return {name: t["value"] for name, t in doc["traits"].items()}
