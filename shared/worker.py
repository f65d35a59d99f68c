"""The consumer loop every worker runs: batch → handle (one transaction) → commit offsets.

``handle`` must dead-letter bad records itself and return normally; if it raises (database or
broker down, or a bug), nothing is committed, the consumer seeks back to the batch start and
retries with backoff, so no record is skipped and none is applied twice (handlers are idempotent
on event id). Only failures shown to come from a record's own data may be dead-lettered: see
``is_data_fault``. A worker that keeps failing is visible: the failures counter, the
consecutive-failures and stalled-seconds gauges, a ``batch.failed`` log line per attempt, and
a lag measured from the committed offsets.

Reading ahead: a reader task takes records off the consumer while a batch is handled, up to
``max_records`` waiting (besides the batch in flight), and the next batch is everything waiting.
aiokafka sends no new fetch to a broker while records it fetched are not taken, so without this
a record produced while a batch was being handled was fetched only once that batch was done,
then waited for the batch after it: about two batch times plus a fetch (on Tansu, which answers
a fetch only at the end of its hold, that hold too). With it, the
record is waiting when the batch in flight commits, and is in the next one. Records read ahead
are only in memory: nothing is committed that was not handled, and a failed batch drops what
was read ahead on its partitions when it seeks back.

Rebalances: when partitions are revoked, the in-flight batch is finished and committed first
(the listener waits for it, up to ``revoke_timeout_seconds``; no new batch starts meanwhile); a
batch that takes longer is abandoned for the revoked partitions: they are never committed by
this worker, so their new owner handles those records again (handlers are idempotent). Records
read ahead on revoked partitions are dropped. Offsets are committed, and after a failure sought
back, only on partitions this worker still owns.
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
        # Read ahead while a batch is handled (in partition order), not handled yet.
        self.waiting: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        self.waiting_count = 0
        self._arrived = asyncio.Event()  # records are waiting, or the reader stopped
        self._room = asyncio.Event()  # fewer than max_records are waiting
        self._revoking = False  # no batch may start while partitions are being revoked

    async def run(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        CONSECUTIVE_FAILURES.labels(self.service).set(0)
        STALLED_SECONDS.labels(self.service).set(0)
        reader = asyncio.create_task(self._read_ahead())
        try:
            await self._handle_loop(reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _handle_loop(self, reader: asyncio.Task[None]) -> None:
        backoff = 0.2
        last_lag = 0.0
        while not self.stopping.is_set():
            batches = self._take()
            if not batches:
                if reader.done():
                    reader.result()  # the consumer failed: raise it, as getmany would
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self.poll_timeout_ms / 1000)
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

    async def _read_ahead(self) -> None:
        """Keep taking records off the consumer (so it keeps a fetch in flight) while fewer
        than ``max_records`` are waiting to be handled."""
        try:
            while not self.stopping.is_set():
                room = self.max_records - self.waiting_count
                if room <= 0:
                    self._room.clear()
                    await self._room.wait()
                    continue
                batches = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=room
                )
                # No await between the fetch and here: a seek or a revocation sees either
                # none of these records or all of them waiting.
                for tp, recs in batches.items():
                    if recs:
                        self.waiting.setdefault(tp, []).extend(recs)
                        self.waiting_count += len(recs)
                if self.waiting_count:
                    self._arrived.set()
        finally:
            self._arrived.set()  # wake the handler: it raises the reader's failure

    def _take(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The next batch: what is waiting, up to ``max_records``, in order per partition."""
        if self._revoking or not self.waiting_count:
            self._arrived.clear()
            return {}
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        room = self.max_records
        for tp in list(self.waiting):
            recs = self.waiting.pop(tp)
            batch[tp], rest = recs[:room], recs[room:]
            if rest:
                self.waiting[tp] = rest  # the next batch takes them, after the others
            room -= len(batch[tp])
            if room == 0:
                break
        self.waiting_count -= self.max_records - room
        self._room.set()
        if not self.waiting_count:
            self._arrived.clear()
        return batch

    def _drop_waiting(self, tps: set[TopicPartition]) -> None:
        """Forget what was read ahead on ``tps`` (sought back, or revoked)."""
        for tp in tps:
            self.waiting_count -= len(self.waiting.pop(tp, ()))
        self._room.set()
        if not self.waiting_count:
            self._arrived.clear()

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
            self._drop_waiting(set(batches))  # read again after the seek, in order
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
        self._revoking = True  # the batch in flight may finish; no next one starts
        try:
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
            self._drop_waiting(revoked)  # their next owner reads them from the committed offset
        finally:
            self._revoking = False
            self._arrived.set()

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
                waiting = self.waiting.get(tp)
                done = waiting[0].offset if waiting else await self.consumer.position(tp)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - done)
        for topic, lag in per_topic.items():
            CONSUMER_LAG.labels(self.service, topic).set(lag)

    def stop(self) -> None:
        self.stopping.set()
        self._arrived.set()


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
