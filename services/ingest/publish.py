"""Producing many keyed messages at once: one record batch per partition, one future per batch.

For one producer used by one batch at a time (the worker). Concurrent callers should use
``producer.send``: aiokafka queues whole batches one at a time per partition.

``producer.send`` costs a future, a partitioner call and a callback per message, which was the
worker's second-largest cost; building the batches here keeps Kafka's default partitioning
(murmur2 of the key), so one key's messages stay in one partition and in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


@lru_cache(maxsize=200_000)
def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed message (same as the Java client's)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


async def publish(
    producer: AIOKafkaProducer, topic: str, messages: Sequence[tuple[bytes, bytes]]
) -> None:
    """Produce ``(key, value)`` messages and wait until the broker acknowledged all of them."""
    if not messages:
        return
    count = len(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in messages:
        by_partition.setdefault(partition_of(key, count), []).append((key, value))
    pending: list[asyncio.Future[object]] = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a message of {len(value)} bytes exceeds the batch size")
        batch.close()
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)
