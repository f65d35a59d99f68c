"""Segment / RudderStack spec messages mapped onto Waypoint events (pure functions).

So that the official SDKs send to Waypoint unchanged. The mapping is documented in
docs/events.md ("Segment mapping"); keep the two in step.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from shared.events import EventType, IdentifierType, InvalidIdentifier, normalize_identifier
from shared.events.identifiers import DEFAULT_PHONE_REGION

SEGMENT_TYPES = ("identify", "track", "alias", "page", "screen", "group")
ORDER_COMPLETED = "order completed"

_CHANNEL_OF_CONTEXT = {"browser": "web", "mobile": "app", "server": None}
_APP_LIBRARIES = ("ios", "android", "react-native", "flutter", "swift", "kotlin", "mobile")
_WEB_LIBRARIES = ("analytics.js", "analytics-next", "rudder-sdk-js", "javascript")
_WAYPOINT_CHANNELS = {
    "phone", "ivr", "web_chat", "email", "social", "messenger", "sms", "app", "web", "bot",
    "in_person", "video", "other",
}  # fmt: skip
_TYPES = {t.value for t in EventType}


class SegmentError(ValueError):
    """A message that cannot be mapped (the caller reports it per item)."""


def _obj(message: dict[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def channel_of(context: dict[str, Any]) -> str | None:
    """``context.channel`` (Waypoint's, or Segment's browser/mobile/server), else the library."""
    declared = _text(context.get("channel"))
    if declared:
        lowered = declared.lower()
        if lowered in _WAYPOINT_CHANNELS:
            return lowered
        if lowered in _CHANNEL_OF_CONTEXT:
            return _CHANNEL_OF_CONTEXT[lowered]
    library = (_text(_obj(context, "library").get("name")) or "").lower()
    if any(name in library for name in _APP_LIBRARIES):
        return "app"
    if any(name in library for name in _WEB_LIBRARIES):
        return "web"
    return None


def flatten_traits(traits: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar traits kept as they are; nested objects become dotted keys; lists are dropped."""
    flat: dict[str, Any] = {}
    for key, value in traits.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_traits(value, f"{name}."))
        elif value is None or isinstance(value, str | int | float | bool):
            flat[name] = value
    return flat


def _usable(id_type: IdentifierType, value: Any, phone_region: str) -> str | None:
    text = _text(value)
    if text is None:
        return None
    try:
        normalize_identifier(id_type, text, default_region=phone_region)
    except InvalidIdentifier:
        return None  # a malformed trait stays a trait; it just does not identify anyone
    return text


def identifiers_of(
    message: dict[str, Any], traits: dict[str, Any], *, phone_region: str = DEFAULT_PHONE_REGION
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(id_type: IdentifierType, value: Any, verified_by: str | None) -> None:
        text = _usable(id_type, value, phone_region)
        if text and not any(i["type"] == id_type.value and i["value"] == text for i in found):
            item = {"type": id_type.value, "value": text}
            if verified_by:
                item["verified_by"] = verified_by
            found.append(item)

    add(IdentifierType.user_id, message.get("userId"), "login")
    add(IdentifierType.anonymous_id, message.get("anonymousId"), "cookie")
    context_traits = _obj(_obj(message, "context"), "traits")
    for source in (traits, context_traits):
        add(IdentifierType.email, source.get("email"), "self_asserted")
        add(IdentifierType.phone, source.get("phone"), "self_asserted")
    return found


def _parse(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _time(message: dict[str, Any], now: datetime) -> str:
    """When it happened, corrected for the sender's clock as Segment does:
    ``received − (sentAt − timestamp)``, so a device clock that runs ahead is not refused."""
    happened = _text(message.get("timestamp")) or _text(message.get("originalTimestamp"))
    if happened is None:
        return now.isoformat()
    device_time, sent_at = _parse(happened), _parse(_text(message.get("sentAt")))
    if device_time is None or sent_at is None:
        return happened  # validated (and refused if malformed) like any event time
    return (now - (sent_at - device_time)).isoformat()


def _source(context: dict[str, Any]) -> str:
    library = _obj(context, "library")
    name = _text(library.get("name"))
    return f"segment:{name}" if name else "segment"


def _track(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _text(message.get("event"))
    if not name:
        raise SegmentError("a track call needs an 'event' name")
    properties = _obj(message, "properties")
    if name in _TYPES:
        return name, dict(properties)
    if name.lower() == ORDER_COMPLETED:
        amount = properties.get("total", properties.get("revenue"))
        currency = _text(properties.get("currency"))
        data: dict[str, Any] = {
            "order_id": _text(properties.get("order_id")),
            "amount": amount if isinstance(amount, int | float) else None,
            "currency": currency.upper() if currency and len(currency) == 3 else None,
            "properties": properties,
        }
        return EventType.purchase_completed.value, {k: v for k, v in data.items() if v is not None}
    return EventType.product_used.value, {"feature": name, "properties": properties}


def to_cloud_event(
    message: Any,
    *,
    tenant: str,
    now: datetime | None = None,
    phone_region: str = DEFAULT_PHONE_REGION,
) -> dict[str, Any]:
    """One Segment message → one Waypoint CloudEvent (as a dict, validated by the caller).

    ``phone_region`` must be the one the caller validates with: a phone trait that is not a
    valid number there is left out of the identifiers (it stays a trait).
    """
    if not isinstance(message, dict):
        raise SegmentError("a message must be a JSON object")
    kind = _text(message.get("type"))
    if kind not in SEGMENT_TYPES:
        raise SegmentError(f"unknown Segment call type {message.get('type')!r}")
    now = now or datetime.now(UTC)
    context = _obj(message, "context")
    traits = flatten_traits(_obj(message, "traits"))
    identifiers = identifiers_of(message, _obj(message, "traits"), phone_region=phone_region)
    if kind == "identify":  # RudderStack's SDKs send the traits in context.traits only
        traits = {**flatten_traits(_obj(context, "traits")), **traits}
    data: dict[str, Any] = {}
    if kind == "identify":
        event_type = EventType.identity_linked.value
        data["traits"] = traits
    elif kind == "alias":
        event_type = EventType.identity_linked.value
        previous = _text(message.get("previousId"))
        if not previous or not _text(message.get("userId")):
            raise SegmentError("an alias call needs 'previousId' and 'userId'")
        same_as_anonymous = previous == _text(message.get("anonymousId"))
        id_type = IdentifierType.anonymous_id if same_as_anonymous else IdentifierType.user_id
        if not any(i["value"] == previous for i in identifiers):
            identifiers.append({"type": id_type.value, "value": previous})
    elif kind == "group":
        event_type = EventType.identity_linked.value
        group_id = _text(message.get("groupId"))
        if not group_id:
            raise SegmentError("a group call needs a 'groupId'")
        identifiers.append({"type": IdentifierType.account_id.value, "value": group_id})
        data["traits"] = {f"account.{k}": v for k, v in traits.items()}
    elif kind == "track":
        event_type, data = _track(message)
    elif kind == "page":
        event_type = EventType.marketing_touched.value
        data = {"touchpoint": _text(message.get("name")), "properties": _obj(message, "properties")}
    else:  # screen
        event_type = EventType.product_used.value
        name = _text(message.get("name"))
        data = {
            "feature": f"screen:{name}" if name else "screen",
            "properties": _obj(message, "properties"),
        }
    if not identifiers:
        raise SegmentError("a message needs a 'userId' or an 'anonymousId'")
    channel = channel_of(context)
    event_data = {k: v for k, v in data.items() if v is not None}
    event_data["identifiers"] = identifiers
    if channel and "channel" not in event_data:
        event_data["channel"] = channel
    return {
        "specversion": "1.0",
        "id": _text(message.get("messageId")) or f"segment-{uuid.uuid4()}",
        "source": _source(context),
        "type": event_type,
        "time": _time(message, now),
        "tenant": tenant,
        "data": event_data,
    }


def batch_messages(body: Any) -> list[Any]:
    """The messages of a ``/v1/batch`` body; the batch's ``context`` and ``sentAt`` go to each."""
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise SegmentError("a batch body is an object with a 'batch' array")
    shared_context = _obj(body, "context")
    sent_at = body.get("sentAt")
    messages: list[Any] = []
    for message in body["batch"]:
        if isinstance(message, dict):
            if shared_context:
                message = {**message, "context": {**shared_context, **_obj(message, "context")}}
            if sent_at is not None and "sentAt" not in message:
                message = {**message, "sentAt": sent_at}
        messages.append(message)
    return messages
