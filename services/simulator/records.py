"""Kafka records for simulated events: structured or binary CloudEvents, and poison messages."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

Headers = list[tuple[str, bytes]]
STRUCTURED = [("content-type", b"application/cloudevents+json")]
_BINARY_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "tenant", "subject")


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes
    headers: Headers
    kind: str  # "structured", "binary" or "poison:<what>"


def structured(key: str, event: dict[str, Any]) -> Record:
    return Record(key.encode(), orjson.dumps(event), STRUCTURED, "structured")


def binary(key: str, event: dict[str, Any]) -> Record:
    """CloudEvents Kafka binding, binary mode: attributes in ``ce_*`` headers, ``data`` as value."""
    headers = [
        (f"ce_{name}", str(event[name]).encode())
        for name in _BINARY_ATTRIBUTES
        if event.get(name) is not None
    ]
    headers.append(("content-type", b"application/json"))
    return Record(key.encode(), orjson.dumps(event["data"]), headers, "binary")


def poison(rng: random.Random, tenant: str, number: int) -> Record:
    """One deliberately bad message (each kind has a distinct dead-letter reason)."""
    event_id = f"sim-poison-{number}"
    good: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": "waypoint-simulator",
        "type": "contact.started",
        "time": datetime.now(UTC).isoformat(),
        "tenant": tenant,
        "data": {"identifiers": [{"type": "email", "value": f"poison{number}@inbox.test"}]},
    }
    key = f"{tenant}|poison".encode()
    kind = rng.choice(
        (
            "not_json",
            "unknown_type",
            "missing_attribute",
            "schema",
            "future_time",
            "binary_not_json",
        )
    )
    if kind == "not_json":
        return Record(key, b"{this is not json", STRUCTURED, "poison:not_json")
    if kind == "unknown_type":
        return Record(
            key,
            orjson.dumps({**good, "type": "contact.teleported"}),
            STRUCTURED,
            "poison:unknown_type",
        )
    if kind == "missing_attribute":
        return Record(
            key,
            orjson.dumps({k: v for k, v in good.items() if k != "source"}),
            STRUCTURED,
            "poison:missing_attribute",
        )
    if kind == "schema":
        bad = {
            **good,
            "type": "survey.responded",
            "data": {**good["data"], "survey": "csat", "score": 11},
        }
        return Record(key, orjson.dumps(bad), STRUCTURED, "poison:schema")
    if kind == "future_time":
        later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        return Record(key, orjson.dumps({**good, "time": later}), STRUCTURED, "poison:future_time")
    record = binary(key.decode(), good)
    return Record(key, b"\x00not json", record.headers, "poison:binary_not_json")


def plan(
    keyed_events: Iterable[tuple[str, dict[str, Any]]],
    *,
    seed: int,
    tenant: str,
    binary_fraction: float = 0.0,
    invalid_fraction: float = 0.0,
) -> Iterator[Record]:
    """The records to send, deterministic for a seed: some binary, some poison in between."""
    rng = random.Random(seed ^ 0x5EED)
    poisoned = 0
    for key, event in keyed_events:
        if binary_fraction and rng.random() < binary_fraction:
            yield binary(key, event)
        else:
            yield structured(key, event)
        if invalid_fraction and rng.random() < invalid_fraction:
            poisoned += 1
            yield poison(rng, tenant, poisoned)
