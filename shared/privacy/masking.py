"""The one masking rule: a value marked ``sensitive`` (a fact's value, a message's text) is
shown as ``MASK`` on every read path (events, dead letters, facts, context, timeline, exports,
logs) unless an admin asks to reveal it, which is audited.

At rest the value is not stored at all: ingest (and journey, for facts agents record) replace it
with ``MASK`` and keep it sealed (``crypto.Keyring.seal``) in the event's ``sealed`` field,
``{field: token}``. Revealing opens the token.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

MASK = "••••"
SEALED = "sealed"
# Event type → the field of its data that ``sensitive: true`` covers.
SENSITIVE_FIELD = {
    "fact.collected": "value",
    "message.received": "text",
    "message.sent": "text",
}


def sensitive_field(event_type: str, data: MutableMapping[str, Any]) -> str | None:
    """The field ``data`` holds a sensitive value in, if any."""
    name = SENSITIVE_FIELD.get(event_type)
    if name is None or not data.get("sensitive") or data.get(name) in (None, MASK):
        return None
    return name


def masked(entry: dict[str, Any], *, reveal: bool, field: str = "value") -> dict[str, Any]:
    """``entry`` (a copy) with its ``field`` shown as ``MASK`` when it is sensitive, unless
    ``reveal`` (an admin asked, audited). Used by the facts ledger, the timeline (fact values,
    message excerpts) and the pages. The sealed token is never shown."""
    out = dict(entry)  # a copy, and then in place: ~3x faster than a filtered comprehension
    if SEALED in out:
        del out[SEALED]
    if not out.get("sensitive") or reveal or out.get(field) is None:
        return out
    out[field] = MASK
    out["masked"] = True
    return out


Opener = Callable[[str], Any]  # sealed token → its value (raises when it does not open)


def reveal_entry(entry: dict[str, Any], opener: Opener, *, field: str = "value") -> dict[str, Any]:
    """``entry`` with the value its ``sealed`` token holds put back in ``field``."""
    token = entry.get(SEALED)
    if not isinstance(token, str):
        return entry
    try:
        value = opener(token)
    except ValueError:
        return {**entry, field: MASK, "masked": True}
    return {**{k: v for k, v in entry.items() if k != SEALED}, field: value}


def mask_event(event: dict[str, Any], *, opener: Opener | None = None) -> dict[str, Any]:
    """A stored event (CloudEvent JSON) as a reader may see it: the sensitive field masked, or,
    with ``opener`` (an admin revealing, audited), opened from its sealed token."""
    data = event.get("data")
    if not isinstance(data, dict):
        return event
    name = SENSITIVE_FIELD.get(str(event.get("type")))
    sealed = data.get(SEALED)
    if name is None or not data.get("sensitive"):
        if sealed is None:
            return event
        return {**event, "data": {k: v for k, v in data.items() if k != SEALED}}
    out = {k: v for k, v in data.items() if k != SEALED}
    if opener is None:
        if out.get(name) is not None:
            out[name] = MASK
    elif isinstance(sealed, dict) and isinstance(sealed.get(name), str):
        try:
            out[name] = opener(sealed[name])
        except ValueError:
            out[name] = MASK
    # else: stored before encryption at rest; as stored (the admin asked to see it)
    return {**event, "data": out}


def mask_payload(payload: str) -> str:
    """A refused record's text (dead letters) with sensitive values masked. Text that is not a
    JSON event is kept, unless it mentions ``sensitive`` at all (then it is withheld whole)."""
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return MASK if "sensitive" in payload else payload
    if isinstance(parsed, dict):
        masked_event = mask_event(parsed)
        return payload if masked_event is parsed else orjson.dumps(masked_event).decode()
    if isinstance(parsed, list):
        items = [mask_event(x) if isinstance(x, dict) else x for x in parsed]
        return orjson.dumps(items).decode()
    return payload


def mask_log_values(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: an event or event data passed to a log line is masked too."""
    for key, value in event_dict.items():
        if isinstance(value, dict):
            if "data" in value and "type" in value:
                event_dict[key] = mask_event(value)
            elif value.get("sensitive"):
                event_dict[key] = {
                    k: (MASK if k in ("value", "text", "excerpt") else v)
                    for k, v in value.items()
                    if k != SEALED
                }
        elif isinstance(value, str) and value.startswith("{") and '"sensitive"' in value:
            event_dict[key] = mask_payload(value)
    return event_dict
