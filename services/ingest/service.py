"""Accepting events over HTTP: check each item, then produce the good ones to the raw topic.

The raw topic is the single way in: the worker stores, dedupes and publishes HTTP events
exactly as it does for events that channel systems write to Kafka directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ingest import metrics
from services.ingest.config import IngestSettings
from services.ingest.records import nul_rejection
from shared.errors import BadRequest, ServiceUnavailable
from shared.events import (
    EventRejected,
    IdentifierType,
    InvalidIdentifier,
    RejectReason,
    check_depth,
    has_nul,
    normalize_identifier,
    validate_event,
)


@dataclass(frozen=True, slots=True)
class Refused:
    """An item refused before validation (e.g. a Segment message that cannot be mapped)."""

    reason: str
    message: str
    id: str | None = None


Result = dict[str, Any]  # one item's outcome, shaped like schemas.ItemResult


def _rejected(index: int, item_id: str | None, reason: str, message: str) -> Result:
    result: Result = {"index": index, "status": "rejected", "reason": reason, "message": message}
    if item_id is not None:
        result["id"] = item_id
    return result


@dataclass(slots=True)
class Outcome:
    """What happened to a request's items (plain data: built and rendered without a model)."""

    accepted: int
    rejected: int
    results: list[Result]

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected, "results": self.results}


def check_item(
    index: int,
    item: Any,
    *,
    tenant: str,
    settings: IngestSettings,
    now: datetime,
    phone_region: str | None = None,
) -> tuple[Result, bytes | None, bytes | None]:
    """(result, raw topic value, key) of one item; the tenant comes from the API key."""
    if isinstance(item, Refused):
        return _rejected(index, item.id, item.reason, item.message), None, None
    if not isinstance(item, dict):
        return _rejected(index, None, "schema", "an event must be a JSON object"), None, None
    item_id = item.get("id") if isinstance(item.get("id"), str) else None
    named = item.get("tenant")
    if named is not None and named != tenant:
        message = f"event names tenant {named!r}, but the API key belongs to {tenant!r}"
        return _rejected(index, item_id, RejectReason.tenant_mismatch.value, message), None, None
    event = item if named is not None else {**item, "tenant": tenant}
    try:
        check_depth(event)  # before serializing: orjson gives up beyond 255 levels
        value = orjson.dumps(event)
        if has_nul(value):
            raise nul_rejection()
        _within_limit(value, settings)
        envelope = validate_event(
            event,
            now=now,
            phone_region=phone_region or settings.phone_region,
            max_future=settings.max_future,
        )
        # Queued as validated here (phones already E.164 in this tenant's region), so a worker
        # whose view of the tenant's region is older cannot refuse what this response accepted.
        value = envelope.to_json()
        _within_limit(value, settings)
    except EventRejected as exc:
        return _rejected(index, item_id, exc.reason.value, exc.message), None, None
    accepted: Result = {"index": index, "id": envelope.id, "status": "accepted"}
    return accepted, value, envelope.primary_key().encode()


def _within_limit(value: bytes, settings: IngestSettings) -> None:
    if len(value) > settings.max_event_bytes:
        raise EventRejected(
            RejectReason.oversized,
            f"event is {len(value)} bytes; the limit is {settings.max_event_bytes}",
        )


async def accept(
    items: Sequence[Any],
    *,
    tenant: str,
    api: str,
    settings: IngestSettings,
    producer: AIOKafkaProducer,
    phone_region: str | None = None,
) -> Outcome:
    """Validate every item; produce the valid ones to the raw topic (acks=all) before returning.

    ``phone_region`` is the tenant's own (``Principal.phone_region``); None: the shared default.
    """
    now = datetime.now(UTC)
    results: list[Result] = []
    sends: list[tuple[bytes, bytes]] = []
    for index, item in enumerate(items):
        result, value, key = check_item(
            index, item, tenant=tenant, settings=settings, now=now, phone_region=phone_region
        )
        results.append(result)
        if value is not None and key is not None:
            sends.append((key, value))
    try:
        # Per-message sends: concurrent requests share the producer's open batches. (Whole
        # batches via send_batch queue one at a time per partition and time out under load.)
        pending = [
            await producer.send(settings.topic_raw, value=value, key=key) for key, value in sends
        ]
        await asyncio.gather(*pending)
    except KafkaError as exc:
        metrics.HTTP_EVENTS.labels(api, "unavailable").inc(len(sends))
        raise ServiceUnavailable(f"the event broker did not accept the events: {exc}") from exc
    rejected = len(results) - len(sends)
    if sends:
        metrics.HTTP_EVENTS.labels(api, "accepted").inc(len(sends))
    if rejected:
        metrics.HTTP_EVENTS.labels(api, "rejected").inc(rejected)
    return Outcome(accepted=len(sends), rejected=rejected, results=results)


def identifier_keys(identifier: str, *, phone_region: str) -> list[str]:
    """``type:value`` → that one normalized key; a bare value → every type it is valid as."""
    text = identifier.strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix in IdentifierType.__members__:
        id_type = IdentifierType(prefix)
        try:
            return [f"{prefix}:{normalize_identifier(id_type, rest, default_region=phone_region)}"]
        except InvalidIdentifier as exc:
            raise BadRequest(f"identifier: {exc}") from exc
    keys = []
    for id_type in IdentifierType:
        try:
            value = normalize_identifier(id_type, text, default_region=phone_region)
        except InvalidIdentifier:
            continue
        keys.append(f"{id_type.value}:{value}")
    return keys
