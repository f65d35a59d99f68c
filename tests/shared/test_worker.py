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


async def test_a_lone_record_is_handled_without_waiting_for_a_batch_to_fill(
    settings: CommonSettings, producer: AIOKafkaProducer
):
    """One record on an idle topic is handled at once: neither the 5,000-record batch nor the
    poll timeout (a minute here, longer than the test waits) is waited for."""
    topic = f"test-worker-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=1)
    seen: list[bytes] = []

    async def handle(records):
        seen.extend(r.value for r in records)

    consumer = make_consumer(settings, group_id=f"g-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    worker = BatchWorker(
        service="test", consumer=consumer, topics=[topic], handle=handle, poll_timeout_ms=60_000
    )
    task = asyncio.create_task(worker.run())
    try:
        await producer.send_and_wait(topic, b"alone")
        await eventually(lambda: _async(seen == [b"alone"]), timeout=30)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await consumer.stop()


async def test_records_arriving_during_a_batch_are_read_ahead_into_the_next_one(
    settings: CommonSettings, producer: AIOKafkaProducer
):
    """While a batch is handled, the worker keeps taking records off the consumer, so the
    consumer keeps fetching: a record produced after an earlier one was already fetched is in the
    very next batch, not in the one after it (aiokafka fetches nothing more from a broker while
    fetched records are not taken). Nothing read ahead is committed before it is handled."""
    topic = f"test-worker-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=1)
    batches: list[list[bytes]] = []
    in_batch, release = asyncio.Event(), asyncio.Event()

    async def handle(records):
        batches.append([r.value for r in records])
        if len(batches) == 1:
            in_batch.set()
            await release.wait()

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(settings, group_id=group)
    await consumer.start()
    worker = BatchWorker(service="test", consumer=consumer, topics=[topic], handle=handle)
    task = asyncio.create_task(worker.run())
    try:
        await producer.send_and_wait(topic, b"first")
        await asyncio.wait_for(in_batch.wait(), 30)
        await producer.send_and_wait(topic, b"early")
        await eventually(lambda: _async(_waiting(worker) == [b"early"]), timeout=30)
        await producer.send_and_wait(topic, b"late")  # fetched only if a fetch is still sent
        await eventually(lambda: _async(_waiting(worker) == [b"early", b"late"]), timeout=30)
        # Read ahead, not handled: the committed offset is still before the first batch.
        tp = next(iter(consumer.assignment()))
        assert await consumer.committed(tp) is None
        release.set()
        await eventually(lambda: _async(len(batches) >= 2), timeout=30)
        assert batches[:2] == [[b"first"], [b"early", b"late"]]
        await eventually(lambda: _committed(consumer, tp, 3), timeout=30)
    finally:
        release.set()
        worker.stop()
        await asyncio.wait_for(task, 30)
        await consumer.stop()


def _waiting(worker: BatchWorker) -> list[bytes]:
    return [r.value for recs in worker.waiting.values() for r in recs]


async def _committed(consumer, tp, offset: int) -> bool:
    return await consumer.committed(tp) == offset
