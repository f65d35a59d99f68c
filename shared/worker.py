"""The consumer loop every worker runs: batch → handle (one transaction) → commit offsets.

``handle`` must dead-letter bad records itself and return normally; if it raises (database or
broker down, or a bug), nothing is committed, the consumer seeks back to the batch start and
retries with backoff, so no record is skipped and none is applied twice (handlers are idempotent
on event id). Only failures shown to come from a record's own data may be dead-lettered: see
``is_data_fault``. A worker that keeps failing is visible: the failures counter, the
consecutive-failures and stalled-seconds gauges, a ``batch.failed`` log line per attempt, and
a lag measured from the committed offsets.

Rebalances: when partitions are revoked, the in-flight batch is finished and committed first
(the listener waits for it, up to ``revoke_timeout_seconds``); a batch that takes longer is
abandoned for the revoked partitions: they are never committed by this worker, so their new
owner handles those records again (handlers are idempotent). Offsets are committed, and after a
failure sought back, only on partitions this worker still owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from shared.faults import crash_point
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
COMMIT_LATENCY = Histogram(
    "waypoint_consumer_commit_duration_seconds",
    "Round trip of one offset commit to the group coordinator (after the batch's effects).",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
BATCH_FAILURES = Counter(
    "waypoint_consumer_batch_failures_total",
    "Batches whose handling failed and was retried (database or broker down, or a bug).",
    ["service"],
)
CONSECUTIVE_FAILURES = Gauge(
    "waypoint_consumer_consecutive_failures",
    "Failed attempts at the current batch since the last committed one (0 when healthy).",
    ["service"],
)
STALLED_SECONDS = Gauge(
    "waypoint_consumer_stalled_seconds",
    "Seconds since the first failed attempt at the current batch (0 while batches commit).",
    ["service"],
)
REBALANCES = Counter(
    "waypoint_consumer_rebalances_total",
    "Partition revocations seen by this worker, by what happened to the batch in flight "
    "(idle, finished, abandoned).",
    ["service", "batch"],
)
CONSUMER_LAG = Gauge(
    "waypoint_consumer_lag",
    "Records between the committed offset and the high watermark, summed over this process's "
    "partitions (it keeps growing while a batch fails).",
    ["service", "topic"],
)

Handler = Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None]]
log = get_logger("worker")

# SQLSTATE classes that say the statement's data is at fault: data exception, integrity
# constraint violation, program limit exceeded (a value too large for an index, …).
DATA_SQLSTATE_CLASSES = ("22", "23", "54")


class RecordRejected(Exception):
    """Raised on purpose when a record's own data cannot be applied (a domain rejection).

    The only Python exception a handler may dead-let on; a ``KeyError`` or ``TypeError`` from
    our code is a bug and must be retried, never turned into a dead letter.
    """


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind ``exc`` (itself, SQLAlchemy's ``orig``, or a cause)."""
    seen: BaseException | None = exc
    while seen is not None:
        for candidate in (seen, getattr(seen, "orig", None)):
            state = getattr(candidate, "sqlstate", None)
            if isinstance(state, str):
                return state
        seen = seen.__cause__  # an explicit ``raise … from``, never an unrelated context
    return None


def is_data_fault(exc: BaseException) -> bool:
    """True only when the failure is shown to come from the record's own data: a deliberate
    ``RecordRejected``, or the database refusing its values (SQLSTATE class 22, 23 or 54).
    Anything else (connection lost, a privilege missing, a bug) is not: retry, never skip."""
    if isinstance(exc, RecordRejected):
        return True
    state = sqlstate(exc)
    return state is not None and state.startswith(DATA_SQLSTATE_CLASSES)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka awaits ``on_partitions_revoked`` before the group re-joins (the generation is
    still valid, so a commit made meanwhile counts): let the batch in flight finish and commit,
    then forget the positions of partitions we no longer own."""

    def __init__(self, worker: BatchWorker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.revoking(set(revoked))

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
        revoke_timeout_seconds: float = 30.0,
    ):
        self.service = service
        self.consumer = consumer
        self.topics = topics
        self.handle = handle
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.revoke_timeout_seconds = revoke_timeout_seconds
        self.idle = asyncio.Event()  # no batch in flight
        self.idle.set()
        self.stopping = asyncio.Event()
        self.batches = 0
        self.failures = 0  # consecutive failed attempts at the current batch
        self.failing_since: float | None = None
        # Per partition, the next offset to handle: committed, or the start of a failing batch.
        self.next_offsets: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        CONSECUTIVE_FAILURES.labels(self.service).set(0)
        STALLED_SECONDS.labels(self.service).set(0)
        backoff = 0.2
        last_lag = 0.0
        while not self.stopping.is_set():
            batches = await self.consumer.getmany(
                timeout_ms=self.poll_timeout_ms, max_records=self.max_records
            )
            records = [r for recs in batches.values() for r in recs]
            if records and not await self._handle(batches, records):
                await self._update_lag()
                with contextlib.suppress(TimeoutError):  # back off, but stop at once if asked
                    await asyncio.wait_for(self.stopping.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.2
            now = time.monotonic()
            if now - last_lag > 1.0:
                last_lag = now
                await self._update_lag()

    async def _handle(
        self,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> bool:
        """Handle and commit one batch; False when it failed (then the batch is handled again)."""
        self.idle.clear()
        try:
            return await self._handle_batch(batches, records)
        finally:
            self.idle.set()

    async def _handle_batch(
        self,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> bool:
        start = time.perf_counter()
        try:
            await self.handle(records)
            # A partition revoked meanwhile (batch abandoned) is its new owner's to commit.
            owned = self.consumer.assignment()
            offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items() if tp in owned}
            if len(offsets) < len(batches):
                log.info("batch.partitions_lost", lost=len(batches) - len(offsets))
            crash_point(self.service, "before_commit")
            if offsets:
                committing = time.perf_counter()
                await self.consumer.commit(offsets)
                COMMIT_LATENCY.labels(self.service).observe(time.perf_counter() - committing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            owned = self.consumer.assignment()  # seeking a partition we lost would raise
            for tp, recs in batches.items():
                if tp in owned:
                    self.consumer.seek(tp, recs[0].offset)
                    self.next_offsets[tp] = recs[0].offset
            self.failures += 1
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            stalled = time.monotonic() - self.failing_since
            BATCH_FAILURES.labels(self.service).inc()
            CONSECUTIVE_FAILURES.labels(self.service).set(self.failures)
            STALLED_SECONDS.labels(self.service).set(stalled)
            log.exception(
                "batch.failed",
                records=len(records),
                error=type(exc).__name__,
                consecutive_failures=self.failures,
                stalled_s=round(stalled, 1),
            )
            return False
        owned = self.consumer.assignment()
        for tp, recs in batches.items():
            if tp in owned:
                self.next_offsets[tp] = recs[-1].offset + 1
        if self.failures:
            log.info("batch.recovered", after_failures=self.failures)
        self.failures, self.failing_since = 0, None
        CONSECUTIVE_FAILURES.labels(self.service).set(0)
        STALLED_SECONDS.labels(self.service).set(0)
        self.batches += 1
        BATCH_SIZE.labels(self.service).observe(len(records))
        BATCH_LATENCY.labels(self.service).observe(time.perf_counter() - start)
        return True

    async def revoking(self, revoked: set[TopicPartition]) -> None:
        """Partitions are being taken away: finish the batch in flight (it commits while the
        generation is still ours), or abandon it after ``revoke_timeout_seconds``."""
        outcome = "idle"
        if not self.idle.is_set():
            try:
                await asyncio.wait_for(self.idle.wait(), self.revoke_timeout_seconds)
                outcome = "finished"
            except TimeoutError:
                outcome = "abandoned"
                log.warning(
                    "batch.abandoned", reason="rebalance", waited_s=self.revoke_timeout_seconds
                )
        REBALANCES.labels(self.service, outcome).inc()
        log.info("partitions.revoked", count=len(revoked), batch=outcome)
        for tp in revoked:
            self.next_offsets.pop(tp, None)

    async def _update_lag(self) -> None:
        """Lag from the next offset to handle (the committed one), not the fetch position: while
        a batch keeps failing the consumer has fetched ahead, but nothing after it is done."""
        per_topic = dict.fromkeys(self.topics, 0)
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            done = self.next_offsets.get(tp)
            if done is None:
                done = await self.consumer.position(tp)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - done)
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
