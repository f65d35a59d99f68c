"""The CloudEvents 1.0 envelope of every Waypoint event, and its validation.

One ``TypeAdapter`` over a union discriminated on ``type`` validates the envelope and the typed
``data`` in a single pass straight from JSON bytes (the ingest hot path).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from shared.events import payloads as p
from shared.events.identifiers import DEFAULT_PHONE_REGION, IdentifierType

SCHEMA_VERSION = "1"
MAX_EVENT_BYTES = 256 * 1024
# Objects and arrays nested deeper than this are refused (the event itself is level 1). Real
# events nest a handful of levels; serializers give up around 255 (orjson, pydantic), so an
# unbounded depth would pass validation and fail later, in the worker or the HTTP API.
MAX_JSON_DEPTH = 64


class EventType(StrEnum):
    contact_started = "contact.started"
    contact_ended = "contact.ended"
    ivr_step = "ivr.step"
    bot_step = "bot.step"
    contact_queued = "contact.queued"
    contact_abandoned = "contact.abandoned"
    agent_joined = "agent.joined"
    contact_transferred = "contact.transferred"
    message_received = "message.received"
    message_sent = "message.sent"
    callback_requested = "callback.requested"
    callback_completed = "callback.completed"
    fact_collected = "fact.collected"
    case_opened = "case.opened"
    case_updated = "case.updated"
    case_resolved = "case.resolved"
    survey_responded = "survey.responded"
    identity_linked = "identity.linked"
    product_used = "product.used"
    marketing_touched = "marketing.touched"
    purchase_completed = "purchase.completed"
    customer_churned = "customer.churned"
    customer_renewed = "customer.renewed"
    feedback_submitted = "feedback.submitted"


PAYLOADS: dict[EventType, type[p.EventData]] = {
    EventType.contact_started: p.ContactStarted,
    EventType.contact_ended: p.ContactEnded,
    EventType.ivr_step: p.FlowStep,
    EventType.bot_step: p.FlowStep,
    EventType.contact_queued: p.ContactQueued,
    EventType.contact_abandoned: p.ContactAbandoned,
    EventType.agent_joined: p.AgentJoined,
    EventType.contact_transferred: p.ContactTransferred,
    EventType.message_received: p.Message,
    EventType.message_sent: p.Message,
    EventType.callback_requested: p.CallbackRequested,
    EventType.callback_completed: p.CallbackCompleted,
    EventType.fact_collected: p.FactCollected,
    EventType.case_opened: p.CaseEvent,
    EventType.case_updated: p.CaseEvent,
    EventType.case_resolved: p.CaseEvent,
    EventType.survey_responded: p.SurveyResponded,
    EventType.identity_linked: p.IdentityLinked,
    EventType.product_used: p.ProductUsed,
    EventType.marketing_touched: p.MarketingTouched,
    EventType.purchase_completed: p.PurchaseCompleted,
    EventType.customer_churned: p.Outcome,
    EventType.customer_renewed: p.Outcome,
    EventType.feedback_submitted: p.FeedbackSubmitted,
}


class Envelope(BaseModel):
    """CloudEvents 1.0 attributes plus Waypoint's extensions (``tenant``, ``schemaversion``)."""

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=512)
    type: EventType
    time: p.UtcDateTime
    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    subject: str | None = Field(None, max_length=256)
    datacontenttype: Literal["application/json"] | None = "application/json"
    dataschema: str | None = None
    schemaversion: Literal["1"] = "1"
    data: p.EventData

    @property
    def identifiers(self) -> list[p.Identifier]:
        return self.data.identifiers

    def primary_key(self) -> str:
        """Kafka key that keeps one person's events in order when they use the same identifier."""
        best = min(self.data.identifiers, key=lambda i: _KEY_PRIORITY.index(i.type))
        return f"{self.tenant}|{best.key}"

    def to_json(self) -> bytes:
        # pydantic's own serializer: the same JSON as model_dump(mode="json") + orjson, faster.
        return self.model_dump_json(exclude_none=True).encode()


_KEY_PRIORITY = [
    IdentifierType.crm_id,
    IdentifierType.user_id,
    IdentifierType.account_id,
    IdentifierType.email,
    IdentifierType.phone,
    IdentifierType.messenger,
    IdentifierType.social,
    IdentifierType.chat_session,
    IdentifierType.device_id,
    IdentifierType.anonymous_id,
]


def _typed_envelope(event_type: EventType, data_model: type[p.EventData]) -> type[Envelope]:
    name = "".join(part.title() for part in event_type.value.replace(".", "_").split("_"))
    literal: Any = Literal[event_type.value]
    model: type[Envelope] = create_model(
        f"{name}Event",
        __base__=Envelope,
        type=(literal, ...),
        data=(data_model, ...),
    )
    return model


EVENT_MODELS: dict[EventType, type[Envelope]] = {
    t: _typed_envelope(t, model) for t, model in PAYLOADS.items()
}
AnyEvent = Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
EVENT_ADAPTER: TypeAdapter[Envelope] = TypeAdapter(AnyEvent)  # type: ignore[arg-type]


class RejectReason(StrEnum):
    """Why an event was refused; a bounded set, used as a metric label and dead-letter header."""

    not_json = "not_json"
    oversized = "oversized"
    missing_attribute = "missing_attribute"
    unknown_type = "unknown_type"
    schema = "schema"
    invalid_identifier = "invalid_identifier"
    future_time = "future_time"
    unknown_tenant = "unknown_tenant"
    tenant_mismatch = "tenant_mismatch"
    too_deep = "too_deep"
    # The worker failed on this record in a step after validation (serializing, storing): the
    # record is set aside so the partition moves on; the message names the error.
    unprocessable = "unprocessable"


class EventRejected(Exception):
    def __init__(self, reason: RejectReason, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


def _location(error: Any) -> str:
    # pydantic puts the union branch (the event type) first; the sender cares about the field.
    parts = [str(x) for x in error.get("loc", ())]
    if parts and parts[0] in _TYPE_VALUES:
        parts = parts[1:]
    return ".".join(parts)


_TYPE_VALUES = {t.value for t in EventType}


def _describe(exc: ValidationError) -> tuple[RejectReason, str]:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "union_tag_invalid":
        tag = (first.get("ctx") or {}).get("tag", "?")
        return RejectReason.unknown_type, f"unknown event type {tag!r}"
    if first["type"] == "union_tag_not_found":
        return RejectReason.missing_attribute, "missing required attribute 'type'"
    loc = _location(first)
    if first["type"] == "missing" and "." not in loc:
        return RejectReason.missing_attribute, f"missing required attribute {loc!r}"
    if first["type"] in {"model_type", "model_attributes_type"} and not loc:
        return RejectReason.schema, "an event must be a JSON object"
    if first["type"] == "invalid_identifier":
        return RejectReason.invalid_identifier, f"{loc}: {first['msg']}"
    message = "; ".join(f"{_location(e) or 'event'}: {e['msg']}" for e in errors[:5])
    return RejectReason.schema, message


def _nests_deeper(node: dict[str, Any] | list[Any], levels_left: int) -> bool:
    if levels_left == 0:
        return True
    for child in node.values() if isinstance(node, dict) else node:
        if isinstance(child, dict | list) and _nests_deeper(child, levels_left - 1):
            return True
    return False


_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")  # not an escaped backslash + "u0000"


def has_nul(payload: bytes) -> bool:
    """True when JSON text holds a U+0000 character (the cheap tests first: it is rare)."""
    if b"\x00" in payload:
        return True
    return b"\\u0000" in payload and _NUL_ESCAPE.search(payload) is not None


def check_depth(value: object, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse parsed JSON whose objects and arrays nest more than ``max_depth`` levels."""
    if isinstance(value, dict | list) and _nests_deeper(value, max_depth):
        raise EventRejected(
            RejectReason.too_deep,
            f"JSON objects and arrays nest more than {max_depth} levels deep (the limit)",
        )


def load_event(raw: bytes | bytearray | memoryview, *, max_bytes: int = MAX_EVENT_BYTES) -> Any:
    """Parse an event's JSON text within the size and depth limits; raise ``EventRejected``."""
    if len(raw) > max_bytes:
        raise EventRejected(
            RejectReason.oversized, f"event is {len(raw)} bytes; the limit is {max_bytes}"
        )
    text = raw.tobytes() if isinstance(raw, memoryview) else raw
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EventRejected(RejectReason.not_json, f"not JSON: {exc}") from exc
    # Depth ≤ the number of brackets: the walk is needed only for the rare bracket-rich event.
    if text.count(b"{") + text.count(b"[") > MAX_JSON_DEPTH:
        check_depth(parsed)
    return parsed


# CloudEvents' required context attributes, then Waypoint's (the order they are reported in).
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "tenant", "data")


def missing_attributes(raw: dict[str, Any]) -> None:
    """Refuse an event that lacks required attributes, naming every one of them (pydantic
    stops at the missing ``type``, the union's discriminator)."""
    missing = [name for name in REQUIRED_ATTRIBUTES if raw.get(name) is None]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise EventRejected(
            RejectReason.missing_attribute, f"missing required attribute{plural} {names}"
        )


def validate_event(
    raw: bytes | dict[str, Any],
    *,
    now: datetime,
    phone_region: str = DEFAULT_PHONE_REGION,
    max_future: timedelta = timedelta(minutes=5),
    max_bytes: int = MAX_EVENT_BYTES,
    loaded: bool = False,
) -> Envelope:
    """Validate and normalize one event; raise ``EventRejected`` with a reason and a message.

    ``loaded``: ``raw`` is a dict that ``load_event`` returned (size and depth already checked).
    """
    context = {"phone_region": phone_region}
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = load_event(raw, max_bytes=max_bytes)
    elif not loaded:
        check_depth(raw)
    if isinstance(raw, dict):
        missing_attributes(raw)
    try:
        event = EVENT_ADAPTER.validate_python(raw, context=context)
    except ValidationError as exc:
        if exc.errors()[0]["type"] in {"json_invalid", "json_type"}:
            raise EventRejected(RejectReason.not_json, "body is not a JSON object") from exc
        reason, message = _describe(exc)
        raise EventRejected(reason, message) from exc
    event.time = p.utc(event.time)
    if event.time - now > max_future:
        raise EventRejected(
            RejectReason.future_time,
            f"time {event.time.isoformat()} is more than {max_future} ahead of the server clock",
        )
    return event


def parse_normalized(raw: bytes) -> Envelope:
    """Read an event that ingest already validated (the normalized topic, stored envelopes).

    Identifiers are kept as stored, not normalized again: a rule tightened since (such as
    refusing numbers that are possible but not valid) must not make stored history unreadable.
    """
    return EVENT_ADAPTER.validate_json(raw, context={"normalized": True})
