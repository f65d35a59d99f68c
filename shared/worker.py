"""The consumer loop every worker runs: batch → handle (one transaction) → commit offsets.

``handle`` must dead-letter bad records itself and return normally; if it raises (database or
broker down), nothing is committed, the consumer seeks back to the batch start and retries with
backoff, so no record is skipped and none is applied twice (handlers are idempotent on event id).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from shared.logging import get_logger

BATCH_SIZE = Histogram(
    "waypoint_consumer_batch_size",
    "Records per consumed batch.",
    ["service"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_LATENCY = Histogram(
    "waypoint_consumer_batch_duration_seconds",
    "Time to handle one batch (validate, store, publish, commit).",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_FAILURES = Counter(
    "waypoint_consumer_batch_failures_total",
    "Batches whose handling failed and was retried (infrastructure errors).",
    ["service"],
)
CONSUMER_LAG = Gauge(
    "waypoint_consumer_lag",
    "Records behind the high watermark, summed over this process's partitions.",
    ["service", "topic"],
)

Handler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None]]
log = get_logger("worker")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Offsets are committed right after each batch, so nothing is pending at a rebalance;
    we only log it (and reset lag gauges for partitions we no longer own)."""

    def __init__(self, service: str):
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions.revoked", count=len(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info(
            "partitions.assigned",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )


class BatchWorker:
    def __init__(
        self,
        *,
        service: str,
        consumer: AIOKafkaConsumer,
        topics: list[str],
        handle: Handler,
        max_records: int = 5000,
        poll_timeout_ms: int = 100,
    ):
        self.service = service
        self.consumer = consumer
        self.topics = topics
        self.handle = handle
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.stopping = asyncio.Event()
        self.batches = 0

    async def run(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self.service))
        backoff = 0.2
        last_lag = 0.0
        while not self.stopping.is_set():
            batches = await self.consumer.getmany(
                timeout_ms=self.poll_timeout_ms, max_records=self.max_records
            )
            records = [r for recs in batches.values() for r in recs]
            if records:
                start = time.perf_counter()
                try:
                    await self.handle(records)
                    await self.consumer.commit(
                        {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
                    )
                except asyncio.CancelledError:
                    raise
                except Exception:
                    BATCH_FAILURES.labels(self.service).inc()
                    log.exception("batch.failed", records=len(records), retry_in_s=backoff)
                    for tp, recs in batches.items():
                        self.consumer.seek(tp, recs[0].offset)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.2
                self.batches += 1
                BATCH_SIZE.labels(self.service).observe(len(records))
                BATCH_LATENCY.labels(self.service).observe(time.perf_counter() - start)
            now = time.monotonic()
            if now - last_lag > 1.0:
                last_lag = now
                await self._update_lag()

    async def _update_lag(self) -> None:
        per_topic: dict[str, int] = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = await self.consumer.position(tp)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - position)
        for topic, lag in per_topic.items():
            CONSUMER_LAG.labels(self.service, topic).set(lag)

    def stop(self) -> None:
        self.stopping.set()


def install_signal_handlers(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def run_until_stopped(worker: BatchWorker, stop: asyncio.Event | None) -> None:
    """Run ``worker`` until ``stop`` is set or, when ``stop`` is None (the process is the
    worker's own), until SIGTERM / SIGINT. Returns after the in-flight batch is committed."""
    if stop is None:
        install_signal_handlers(worker.stop)
        await worker.run()
        return

    async def relay() -> None:
        await stop.wait()
        worker.stop()

    watcher = asyncio.create_task(relay())
    try:
        await worker.run()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def tune_gc() -> None:
    """For worker and API processes that hold thousands of models per batch: with the default
    thresholds the cyclic GC rescans them over and over (measured: validation 3x slower). They
    are freed by reference counting, so collect young objects far less often and never rescan
    start-up state."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
