"""Structured, binary and poison records (pure)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.simulator import generate_keyed
from services.simulator.records import binary, plan, poison, structured
from shared.events import EventRejected, validate_event


def _rebuild_binary(value: bytes, headers: list[tuple[str, bytes]]) -> dict[str, Any]:
    """How a consumer reads the CloudEvents Kafka binding in binary mode."""
    attrs = {k[3:]: v.decode() for k, v in headers if k.startswith("ce_")}
    assert dict(headers)["content-type"] == b"application/json"
    return {**attrs, "data": orjson.loads(value)}


def test_binary_mode_carries_the_same_event() -> None:
    key, event = next(generate_keyed(customers=1, seed=3, tenant="acme"))
    record = binary(key, event)
    assert record.key == b"acme|sim-3-0"
    assert _rebuild_binary(record.value, record.headers) == event
    assert orjson.loads(structured(key, event).value) == event


def test_every_poison_message_is_rejected() -> None:
    rng = random.Random(1)
    now = datetime.now(UTC)
    kinds: Counter[str] = Counter()
    for number in range(60):
        record = poison(rng, "acme", number)
        kinds[record.kind] += 1
        if record.kind == "poison:binary_not_json":
            with pytest.raises(orjson.JSONDecodeError):
                _rebuild_binary(record.value, record.headers)
        else:
            with pytest.raises(EventRejected) as rejected:
                validate_event(record.value, now=now)
            assert rejected.value.reason.value == record.kind.partition(":")[2]
    assert len(kinds) == 6


def test_plan_mixes_binary_and_poison_deterministically() -> None:
    def kinds(seed: int) -> list[str]:
        events = generate_keyed(customers=60, seed=seed, tenant="acme")
        records = plan(events, seed=seed, tenant="acme", binary_fraction=0.3, invalid_fraction=0.05)
        return [r.kind.partition(":")[0] for r in records]

    first = kinds(9)
    assert first == kinds(9)
    counts = Counter(first)
    total = counts["structured"] + counts["binary"]
    assert 0.2 < counts["binary"] / total < 0.4
    assert 0.02 < counts["poison"] / total < 0.09


def test_plan_without_fractions_is_all_structured() -> None:
    records = list(plan(generate_keyed(customers=5, seed=1, tenant="acme"), seed=1, tenant="acme"))
    assert {r.kind for r in records} == {"structured"}
