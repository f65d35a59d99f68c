"""Turning one raw Kafka record into a validated event or a rejection (pure: no I/O).

Two CloudEvents Kafka bindings are accepted:
- structured mode: the value is the whole event as JSON (``content-type:
  application/cloudevents+json``, or no ``ce_specversion`` header);
- binary mode: context attributes in ``ce_*`` headers, the value is the JSON ``data``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from shared.events import (
    Envelope,
    EventRejected,
    RejectReason,
    check_depth,
    load_event,
    validate_event,
)

Headers = Sequence[tuple[str, bytes | None]]

_CE_PREFIX = "ce_"
_JSON_TYPES = ("application/json", "text/json")


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    max_future: timedelta
    phone_region: str  # the shared default
    tenant_regions: Mapping[str, str | None] = field(default_factory=dict)  # own regions

    def region_of(self, tenant: object) -> str:
        """The phone region of the tenant an event names (its own, else the shared default)."""
        own = self.tenant_regions.get(tenant) if isinstance(tenant, str) else None
        return own or self.phone_region


@dataclass(slots=True)
class Rejection:
    reason: RejectReason
    message: str
    tenant: str | None
    event_id: str | None


def _header_map(headers: Headers | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in headers or ():
        if value is not None:
            found[key.lower()] = value.decode("utf-8", errors="replace")
    return found


def is_binary_mode(headers: Headers | None) -> bool:
    return any(key.lower() == "ce_specversion" for key, _ in headers or ())


def binary_event(value: bytes | None, headers: Headers | None) -> dict[str, Any]:
    """Rebuild a structured event from binary mode (``ce_*`` headers + JSON data body)."""
    attrs = _header_map(headers)
    content_type = attrs.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        raise EventRejected(
            RejectReason.schema, f"binary-mode data must be application/json, not {content_type!r}"
        )
    event: dict[str, Any] = {
        key[len(_CE_PREFIX) :]: text for key, text in attrs.items() if key.startswith(_CE_PREFIX)
    }
    try:
        event["data"] = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise EventRejected(RejectReason.not_json, "binary-mode data is not JSON") from exc
    event["datacontenttype"] = "application/json"  # the binding carries it as content-type
    return event


def decode(
    value: bytes | None, headers: Headers | None, *, now: datetime, limits: Limits
) -> Envelope:
    """Validate and normalize one record in either binding; raises ``EventRejected``."""
    size = len(value or b"")
    if size > limits.max_bytes:
        raise EventRejected(
            RejectReason.oversized, f"event is {size} bytes; the limit is {limits.max_bytes}"
        )
    # orjson + validate_python is about twice as fast as pydantic's own JSON parsing here.
    if headers and is_binary_mode(headers):
        raw = binary_event(value, headers)
        check_depth(raw)
    else:
        raw = load_event(value or b"", max_bytes=limits.max_bytes)
        if not isinstance(raw, dict):
            raise EventRejected(RejectReason.schema, "an event must be a JSON object")
    return validate_event(
        raw,
        now=now,
        phone_region=limits.region_of(raw.get("tenant")),
        max_future=limits.max_future,
        max_bytes=limits.max_bytes,
        loaded=True,
    )


def nul_rejection() -> EventRejected:
    return EventRejected(
        RejectReason.schema, "contains a NUL character (\\u0000), which cannot be stored"
    )


def _clean(value: object, limit: int) -> str | None:
    if isinstance(value, str) and len(value) <= limit and "\x00" not in value:
        return value
    return None


def best_effort_identity(
    value: bytes | None, headers: Headers | None
) -> tuple[str | None, str | None]:
    """Tenant and id of a rejected record, when they can still be read (for operators)."""
    if is_binary_mode(headers):
        attrs = _header_map(headers)
        return _clean(attrs.get("ce_tenant"), 64), _clean(attrs.get("ce_id"), 256)
    try:
        parsed = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    return _clean(parsed.get("tenant"), 64), _clean(parsed.get("id"), 256)


def reject(
    exc: EventRejected, value: bytes | None, headers: Headers | None, known: set[str]
) -> Rejection:
    """A rejection carrying the tenant only when it is a known one (so it can be shown to it)."""
    tenant, event_id = best_effort_identity(value, headers)
    return Rejection(
        reason=exc.reason,
        message=exc.message,
        tenant=tenant if tenant in known else None,
        event_id=event_id,
    )


def store_row(envelope: Envelope, payload: bytes, received_at: datetime) -> tuple[Any, ...]:
    """The ``ingest.event`` row of one event (column order of ``repository.EVENT_COLUMNS``)."""
    data = envelope.data
    return (
        envelope.tenant,
        envelope.id,
        str(envelope.type),  # a StrEnum, or the Literal string of the typed model
        envelope.source,
        envelope.time,
        received_at,
        str(data.channel) if data.channel is not None else None,
        [i.key for i in data.identifiers],
        payload.decode(),
    )


def dead_letter_headers(
    headers: Headers | None,
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
) -> list[tuple[str, bytes]]:
    """The original headers plus why and where the record was refused."""
    kept = [(k, v) for k, v in headers or () if v is not None and not k.startswith("waypoint-")]
    return [
        *kept,
        ("waypoint-reason", rejection.reason.value.encode()),
        ("waypoint-error", rejection.message[:1000].encode()),
        ("waypoint-source-topic", topic.encode()),
        ("waypoint-source-partition", str(partition).encode()),
        ("waypoint-source-offset", str(offset).encode()),
    ]


def payload_digest(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()


def bounded_text(value: bytes | None, limit: int) -> str:
    """The raw payload as text for the operators' table, cut to ``limit`` bytes."""
    raw = (value or b"")[:limit]
    return raw.decode("utf-8", errors="replace").replace("\x00", "\\u0000")
