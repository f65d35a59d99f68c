"""``BatchWorker`` across a rebalance in mid-batch: a second consumer joins the group while the
first is handling a batch. The batch in flight is finished and committed before the partitions
move (nothing handled twice); or, when it takes too long, abandoned, and a failure after the
rebalance seeks only on the partitions still owned (the worker keeps running)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from prometheus_client import REGISTRY

from shared.config import CommonSettings
from shared.kafka import ensure_topics, make_consumer
from shared.worker import BatchWorker
from tests.support import eventually

PARTITIONS = 4
Handler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None]]


async def _topic(settings: CommonSettings, producer: AIOKafkaProducer, per_partition: int) -> str:
    topic = f"test-rebalance-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=PARTITIONS)
    for p in range(PARTITIONS):
        for i in range(per_partition):
            await producer.send(topic, f"{p}:{i}".encode(), partition=p)
    await producer.flush()
    return topic


def _consumer(settings: CommonSettings, group: str) -> AIOKafkaConsumer:
    return make_consumer(
        settings, group_id=group, session_timeout_ms=6000, heartbeat_interval_ms=200
    )


@asynccontextmanager
async def running(
    settings: CommonSettings, group: str, topic: str, handle: Handler, **options: float
) -> AsyncIterator[tuple[BatchWorker, asyncio.Task[None]]]:
    consumer = _consumer(settings, group)
    await consumer.start()
    worker = BatchWorker(
        service="test-rebalance", consumer=consumer, topics=[topic], handle=handle, **options
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker, task
    finally:
        worker.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
        await consumer.stop()


def _rebalances(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "waypoint_consumer_rebalances_total", {"service": "test-rebalance", "batch": outcome}
    )
    return value or 0.0


async def test_a_batch_in_flight_is_finished_and_committed_before_its_partitions_move(
    settings: CommonSettings, producer: AIOKafkaProducer
):
    topic = await _topic(settings, producer, per_partition=10)
    group = f"g-{uuid.uuid4().hex[:8]}"
    handled: Counter[str] = Counter()
    in_batch, release = asyncio.Event(), asyncio.Event()
    finished_before = _rebalances("finished")

    async def first(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if not in_batch.is_set():
            in_batch.set()
            await release.wait()  # the second consumer joins meanwhile
        handled.update(r.value.decode() for r in records)

    async def second(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        handled.update(r.value.decode() for r in records)

    async with running(settings, group, topic, first) as (worker_a, task_a):
        await asyncio.wait_for(in_batch.wait(), 30)
        revoking = asyncio.Event()
        original = worker_a.revoking

        async def noticed(revoked: set) -> None:  # type: ignore[type-arg]
            revoking.set()
            await original(revoked)

        worker_a.revoking = noticed  # type: ignore[method-assign]
        async with running(settings, group, topic, second) as (worker_b, task_b):
            await asyncio.wait_for(revoking.wait(), 30)  # the rebalance waits for the batch
            release.set()
            await eventually(lambda: _assigned(worker_b), timeout=30)
            for p in range(PARTITIONS):  # more work after the rebalance, for both
                for i in range(10, 15):
                    await producer.send(topic, f"{p}:{i}".encode(), partition=p)
            await producer.flush()
            expected = {f"{p}:{i}" for p in range(PARTITIONS) for i in range(15)}
            await eventually(lambda: _async(set(handled) == expected), timeout=30)
            assert not task_a.done()
            assert not task_b.done()
    assert _rebalances("finished") > finished_before
    # The first batch was committed before its partitions moved: nothing handled twice.
    assert max(handled.values()) == 1, [k for k, n in handled.items() if n > 1]


async def test_a_failure_after_a_rebalance_seeks_only_on_partitions_still_owned(
    settings: CommonSettings, producer: AIOKafkaProducer
):
    topic = await _topic(settings, producer, per_partition=10)
    group = f"g-{uuid.uuid4().hex[:8]}"
    handled: Counter[str] = Counter()
    in_batch, release = asyncio.Event(), asyncio.Event()
    abandoned_before = _rebalances("abandoned")

    async def first(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if not in_batch.is_set():
            in_batch.set()
            await release.wait()
            raise ConnectionError("the database went away while the group rebalanced")
        handled.update(r.value.decode() for r in records)

    async def second(records: list[ConsumerRecord[bytes, bytes]]) -> None:
        handled.update(r.value.decode() for r in records)

    # A revocation waits 0.5 s for the batch, then abandons it: the group moves on without it.
    async with running(settings, group, topic, first, revoke_timeout_seconds=0.5) as (
        worker_a,
        task_a,
    ):
        await asyncio.wait_for(in_batch.wait(), 30)
        async with running(settings, group, topic, second) as (worker_b, task_b):
            await eventually(lambda: _assigned(worker_b), timeout=30)
            kept = set(worker_a.consumer.assignment())
            assert len(kept) < PARTITIONS  # some of the batch's partitions are B's now
            release.set()  # the batch fails after the rebalance: seek only on A's partitions
            expected = {f"{p}:{i}" for p in range(PARTITIONS) for i in range(10)}
            await eventually(lambda: _async(set(handled) == expected), timeout=30)
            assert not task_a.done(), task_a.exception() if task_a.done() else None
            assert not task_b.done()
    assert _rebalances("abandoned") > abandoned_before


async def _assigned(worker: BatchWorker) -> bool:
    return bool(worker.consumer.assignment())


async def _async(value: bool) -> bool:
    return value
