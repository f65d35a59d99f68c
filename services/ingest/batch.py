"""One consumed batch, classified (pure): events to store and publish, records to dead-letter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.ingest.publish import too_large
from services.ingest.records import (
    Headers,
    Limits,
    Rejection,
    decode,
    nul_rejection,
    reject,
    store_row,
)
from shared.events import Envelope, EventRejected, RejectReason, has_nul, parse_normalized

REFUSED = "unknown"  # the channel label of records refused before their channel was read


class RawRecord(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(slots=True)
class Accepted:
    envelope: Envelope
    record: RawRecord


@dataclass
class Plan:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    publish: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, normalized JSON)
    sources: list[RawRecord] = field(default_factory=list)  # the record of each row
    rejects: list[tuple[RawRecord, Rejection]] = field(default_factory=list)
    received: Counter[str] = field(default_factory=Counter)  # by channel
    duplicates_in_batch: Counter[str] = field(default_factory=Counter)

    def refuse(self, record: RawRecord, rejection: Rejection) -> None:
        self.received[REFUSED] += 1
        self.rejects.append((record, rejection))

    def publish_as_stored(self, earlier: dict[tuple[str, str], str]) -> None:
        """Rows already in the store are published as stored (a resend may differ)."""
        if not earlier:
            return
        for index, row in enumerate(self.rows):
            stored = earlier.get((row[0], row[1]))
            if stored is not None:
                envelope = parse_normalized(stored.encode())
                self.publish[index] = (envelope.primary_key().encode(), envelope.to_json())

    def drop_row(self, index: int, rejection: Rejection) -> None:
        """Move a row the database refused to the dead letters."""
        channel = self.rows[index][6] or ""
        self.received[channel] -= 1
        self.refuse(self.sources[index], rejection)
        del self.rows[index], self.publish[index], self.sources[index]


def unprocessable(step: str, exc: Exception) -> EventRejected:
    """A record that failed where validation should have caught it (defence in depth: it is
    set aside, counted and alerted on instead of stalling its partition)."""
    return EventRejected(RejectReason.unprocessable, f"{step} failed: {type(exc).__name__}: {exc}")


def classify(
    records: Sequence[RawRecord], *, now: datetime, limits: Limits
) -> tuple[list[Accepted], list[tuple[RawRecord, EventRejected]]]:
    """Validate every record; a bad one never stops the ones after it."""
    accepted: list[Accepted] = []
    refused: list[tuple[RawRecord, EventRejected]] = []
    for record in records:
        try:
            envelope = decode(record.value, record.headers, now=now, limits=limits)
        except EventRejected as exc:
            refused.append((record, exc))
        except Exception as exc:  # noqa: BLE001 - pure code on one record: no outage possible
            refused.append((record, unprocessable("validation", exc)))
        else:
            accepted.append(Accepted(envelope, record))
    return accepted, refused


def _serialize(envelope: Envelope, max_message_bytes: int | None) -> tuple[bytes, bytes]:
    """(Kafka key, normalized JSON) of an event, refused when it cannot be published."""
    try:
        key, payload = envelope.primary_key().encode(), envelope.to_json()
    except Exception as exc:  # noqa: BLE001 - pure code on one record
        raise unprocessable("serializing the normalized event", exc) from exc
    if has_nul(payload):
        raise nul_rejection()
    if max_message_bytes is not None and too_large(key, payload, max_message_bytes):
        raise EventRejected(
            RejectReason.oversized,
            f"the normalized event is {len(payload)} bytes; the largest message this worker "
            f"may publish is {max_message_bytes} bytes",
        )
    return key, payload


def plan(
    accepted: Sequence[Accepted],
    refused: Sequence[tuple[RawRecord, EventRejected]],
    *,
    known_tenants: set[str],
    received_at: datetime,
    max_message_bytes: int | None = None,
) -> Plan:
    """Drop events of unknown tenants and in-batch repeats; build store rows and messages.

    Everything that can be known about a record before storing it is checked here (it can be
    serialized and published), so that nothing is stored that cannot be delivered."""
    out = Plan()
    refused = list(refused)
    seen: set[tuple[str, str]] = set()
    for item in accepted:
        envelope = item.envelope
        channel = str(envelope.data.channel) if envelope.data.channel is not None else ""
        if envelope.tenant not in known_tenants:
            exc = EventRejected(
                RejectReason.unknown_tenant, f"tenant {envelope.tenant!r} does not exist"
            )
            refused.append((item.record, exc))
            continue
        identity = (envelope.tenant, envelope.id)
        if identity in seen:
            out.received[channel] += 1
            out.duplicates_in_batch[channel] += 1
            continue
        try:
            key, payload = _serialize(envelope, max_message_bytes)
        except EventRejected as rejected:
            refused.append((item.record, rejected))
            continue
        seen.add(identity)
        out.received[channel] += 1
        out.rows.append(store_row(envelope, payload, received_at))
        out.publish.append((key, payload))
        out.sources.append(item.record)
    for record, exc in refused:
        out.refuse(record, reject(exc, record.value, record.headers, known_tenants))
    return out
