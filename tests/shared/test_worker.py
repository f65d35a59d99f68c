"""The shared consumer loop: offsets are committed only after the batch's effects; a failing
batch is retried from its first record, so nothing is skipped."""

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from shared.config import CommonSettings
from shared.kafka import ensure_topics, make_consumer
from shared.worker import BatchWorker
from tests.support import eventually


async def test_failed_batch_is_retried_from_its_first_record(
    settings: CommonSettings, producer: AIOKafkaProducer
):
    topic = f"test-worker-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=1)
    for i in range(10):
        await producer.send_and_wait(topic, f"{i}".encode())

    seen: list[int] = []
    failures = 0

    async def handle(records):
        nonlocal failures
        values = [int(r.value) for r in records]
        if 5 in values and failures < 2:
            failures += 1
            raise ConnectionError("database went away")
        seen.extend(values)

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(settings, group_id=group, session_timeout_ms=6000)
    await consumer.start()
    worker = BatchWorker(service="test", consumer=consumer, topics=[topic], handle=handle)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: _async(sorted(set(seen)) == list(range(10))), timeout=30)
    finally:
        worker.stop()
        await task
        await consumer.stop()
    assert failures == 2
    assert sorted(set(seen)) == list(range(10))
    # Records of a failed batch are handled again, never dropped; none beyond those twice.
    assert len(seen) == 10

    # The committed offset covers everything: a new consumer of the same group starts after the
    # ten. A sentinel produced now is the barrier: the partition is read in order, so anything
    # uncommitted would arrive before it.
    await producer.send_and_wait(topic, b"10")
    again = make_consumer(settings, group_id=group, session_timeout_ms=6000)
    await again.start()
    received: list[int] = []
    try:
        again.subscribe([topic])

        async def sentinel_read() -> bool:
            batch = await again.getmany(timeout_ms=200)
            received.extend(int(r.value) for recs in batch.values() for r in recs)
            return 10 in received

        await eventually(sentinel_read, timeout=30, interval=0)
    finally:
        await again.stop()
    assert received == [10]


async def _async(value):
    return value
