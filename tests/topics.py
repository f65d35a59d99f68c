"""Reading a topic's and a consumer group's positions from the broker: facts, not waiting.

``records_in`` says how many records a topic holds right now (end minus beginning offsets), so
"nothing was dead-lettered" is checked without sleeping and hoping; ``committed`` says where a
consumer group's committed offsets stand.
"""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer, TopicPartition

from shared.config import CommonSettings
from shared.kafka import make_consumer


async def records_in(settings: CommonSettings, producer: AIOKafkaProducer, topic: str) -> int:
    partitions = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
    consumer = make_consumer(settings, group_id=f"count-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        begins = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(ends[p] - begins[p] for p in partitions)


async def committed(
    settings: CommonSettings, producer: AIOKafkaProducer, group: str, topic: str
) -> dict[int, int]:
    """Committed offset per partition of ``topic`` (partitions never committed are absent).

    Asked by a consumer of the group that never subscribes, so it never joins the group."""
    partitions = [TopicPartition(topic, p) for p in await producer.partitions_for(topic)]
    consumer = make_consumer(settings, group_id=group)
    await consumer.start()
    try:
        offsets = {tp.partition: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    return {partition: offset for partition, offset in offsets.items() if offset is not None}
