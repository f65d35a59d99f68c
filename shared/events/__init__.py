"""The event contract shared by every service (CloudEvents 1.0, Waypoint schema version 1)."""

from shared.events.envelope import (
    EVENT_ADAPTER,
    EVENT_MODELS,
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    PAYLOADS,
    SCHEMA_VERSION,
    Envelope,
    EventRejected,
    EventType,
    RejectReason,
    check_depth,
    parse_normalized,
    validate_event,
)
from shared.events.identifiers import (
    STRONG_VERIFICATION,
    IdentifierType,
    InvalidIdentifier,
    Verification,
    is_junk_value,
    normalize_identifier,
    verification_strength,
)
from shared.events.payloads import Channel, EventData, Identifier

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_MODELS",
    "MAX_EVENT_BYTES",
    "MAX_JSON_DEPTH",
    "PAYLOADS",
    "SCHEMA_VERSION",
    "STRONG_VERIFICATION",
    "Channel",
    "Envelope",
    "EventData",
    "EventRejected",
    "EventType",
    "Identifier",
    "IdentifierType",
    "InvalidIdentifier",
    "RejectReason",
    "Verification",
    "check_depth",
    "is_junk_value",
    "normalize_identifier",
    "parse_normalized",
    "validate_event",
    "verification_strength",
]
