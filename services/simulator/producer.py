"""Sending simulated records to the raw topic (optionally at a fixed rate)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from services.simulator.records import Record

_FLUSH_EVERY = 5_000


async def send(
    producer: AIOKafkaProducer, topic: str, records: Iterable[Record], *, rate: float | None = None
) -> Counter[str]:
    """Produce every record (acks as configured); return how many of each kind were sent."""
    sent: Counter[str] = Counter()
    pending: list[asyncio.Future[object]] = []
    started = time.monotonic()
    count = 0
    for record in records:
        pending.append(
            await producer.send(topic, record.value, key=record.key, headers=record.headers)
        )
        sent[record.kind.partition(":")[0]] += 1
        count += 1
        if len(pending) >= _FLUSH_EVERY:
            await asyncio.gather(*pending)
            pending.clear()
        if rate:
            ahead = count / rate - (time.monotonic() - started)
            if ahead > 0.01:
                await asyncio.gather(*pending)  # what is due is delivered before we pause
                pending.clear()
                await asyncio.sleep(ahead)
    await asyncio.gather(*pending)
    return sent
