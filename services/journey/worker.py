"""The journey worker: normalized events → identity + context → customer activity.

Per Kafka batch: parse (unparsable records go to the dead-letter topic with a reason), then
apply in chunks, one transaction each. A chunk's activity is written to the outbox
(``journey.outbox``, one COPY) in that same transaction, and the outbox relay running in this
process publishes it once it has committed (``shared/outbox.py``): alerts never hears of an
attribution journey did not store, and a crash can only repeat an activity (consumers dedupe on
event id; customer ids are deterministic), never lose one. Deadlocks, serialization
failures and concurrent merges retry the chunk; an event that fails on its own data (the
database refuses its values) is isolated and dead-lettered instead of stalling the partition.
Any other failure (an outage, a bug) propagates: ``BatchWorker`` retries the batch with backoff,
counts it and never commits past it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from services.journey.applier import ChunkApplier, ChunkResult, Incoming, StaleChunk
from services.journey.config import JourneySettings
from services.journey.maps.maintain import start_compactor, stop_compactor
from services.journey.metrics import CHUNK_RETRIES, EVENTS, FRESHNESS, PROCESSING
from services.journey.outbox import activity_messages, start_relay, stop_relay
from shared import outbox
from shared.db import Database, raw_connection, raw_pool
from shared.events import parse_normalized
from shared.faults import crash_point
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.logging import configure_logging, get_logger
from shared.privacy import tombstones
from shared.privacy.crypto import Keyring
from shared.privacy.metrics import ERASED_DROPPED
from shared.worker import BatchWorker, is_data_fault, run_until_stopped, sqlstate, tune_gc

log = get_logger("journey.worker")

_RETRYABLE = {"40P01": "deadlock", "40001": "serialization", "23505": "unique_violation"}


def retry_cause(exc: BaseException) -> str | None:
    if isinstance(exc, StaleChunk):
        return "concurrent_merge"
    return _RETRYABLE.get(sqlstate(exc) or "")


def is_poison(exc: BaseException) -> bool:
    """The event's own data broke it: dead-letter it once it is isolated. Only a deliberate
    ``RecordRejected`` or the database refusing its values count; a KeyError, TypeError, …
    from our code is a bug, and retrying (with an alert) beats dead-lettering every event."""
    return is_data_fault(exc)


class JourneyProcessor:
    def __init__(
        self,
        *,
        db: Database,
        producer: AIOKafkaProducer,
        settings: JourneySettings,
        on_commit: Callable[[], None] | None = None,
    ):
        self.db = db
        self.producer = producer
        self.settings = settings
        self.on_commit = on_commit  # wakes this process's outbox relay
        self.keyring = Keyring.from_setting(settings.sealing_keys)
        self.markers = tombstones.Markers("journey", settings.dsn)
        # Chunks run on a plain asyncpg pool: one BEGIN and one COMMIT per chunk. Through the
        # SQLAlchemy session each chunk also paid the pool's pre-ping (BEGIN, a statement,
        # ROLLBACK) and a SELECT 1 to start the transaction. A connection the server closed is
        # replaced by asyncpg on acquire; one broken mid-chunk fails the batch, which
        # ``BatchWorker`` retries, as before. A chunk leaves nothing on its connection (its
        # advisory locks are transaction-scoped): ``raw_pool`` skips the RESET ALL.
        self._pool: asyncpg.Pool | None = None

    async def _chunk_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # chunks are applied one at a time
            self._pool = await raw_pool(self.settings.dsn, "journey-worker", min_size=1, max_size=2)
        return self._pool

    async def close(self) -> None:
        await self.markers.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        items: list[Incoming] = []
        for record in records:
            try:
                items.append(
                    Incoming(parse_normalized(record.value), record.value, record.timestamp)
                )
            except ValidationError as exc:  # the record itself is not a normalized event
                await self.dead_letter(record.value, record.key, "journey_unparsable", str(exc))
        items = await self.drop_erased(items)
        size = self.settings.chunk_size
        for start in range(0, len(items), size):
            await self.apply(items[start : start + size])

    async def drop_erased(self, items: list[Incoming]) -> list[Incoming]:
        """Events of an erased customer's identifiers (a replay of the normalized topic) are
        dropped and counted (shared/privacy/tombstones.py)."""
        if not items:
            return items
        if self.markers.all_clean({item.env.tenant for item in items}):
            return items  # tenants without any erasure: nothing to hash or look up
        async with self.db.session() as session:
            conn = await raw_connection(session)
            gone = await tombstones.erased(
                conn, self.keyring, "journey", [item.env for item in items], self.markers
            )
        if not gone:
            return items
        ERASED_DROPPED.labels("journey").inc(len(gone))
        return [item for index, item in enumerate(items) if index not in gone]

    async def apply(self, items: list[Incoming]) -> ChunkResult | None:
        """Apply a chunk, retrying on conflicts; isolate and dead-letter a poisonous event."""
        try:
            return await self._apply_with_retry(items)
        except Exception as exc:
            if not is_poison(exc):
                raise
            if len(items) == 1:
                log.warning("event.dead_lettered", event_id=items[0].env.id, error=str(exc))
                await self.dead_letter(
                    items[0].raw, None, "journey_apply_failed", f"{type(exc).__name__}: {exc}"
                )
                return None
            for item in items:  # find the culprit; the others apply on their own
                await self.apply([item])
            return None

    async def _apply_with_retry(self, items: list[Incoming]) -> ChunkResult:
        attempt = 0
        while True:
            started = time.perf_counter()
            crash_point("journey", "before_store")
            try:
                pool = await self._chunk_pool()
                async with pool.acquire() as conn, conn.transaction():
                    result = await ChunkApplier(conn, self.settings).run(items)
                    await outbox.enqueue(
                        conn,
                        "journey",
                        activity_messages(self.settings.topic_activity, result.activities),
                        lanes=self.settings.outbox_lanes,
                    )
                    crash_point("journey", "after_publish")  # after the outbox write
                break
            except Exception as exc:
                cause = retry_cause(exc)
                if cause is None or attempt >= self.settings.max_retries:
                    raise
                CHUNK_RETRIES.labels(cause).inc()
                attempt += 1
                await asyncio.sleep(0.02 * 2**attempt * (1 + random.random()))  # noqa: S311
        if result.activities and self.on_commit is not None:
            self.on_commit()
        PROCESSING.observe(time.perf_counter() - started)
        now_ms = time.time() * 1000
        for item in result.applied:
            if item.received_ms:
                FRESHNESS.observe(max(0.0, (now_ms - item.received_ms) / 1000))
        EVENTS.labels("applied").inc(len(result.applied))
        EVENTS.labels("duplicate").inc(result.duplicates)
        return result

    async def dead_letter(self, value: bytes, key: bytes | None, reason: str, message: str) -> None:
        EVENTS.labels("dead_lettered").inc()
        await self.producer.send_and_wait(
            self.settings.topic_dead_letter,
            value,
            key=key,
            headers=[
                ("waypoint-reason", reason.encode()),
                ("waypoint-error", message[:1000].encode()),
                ("waypoint-service", b"journey"),
            ],
        )


async def run(
    settings: JourneySettings | None = None,
    *,
    stop: asyncio.Event | None = None,
    **consumer_overrides: Any,
) -> None:
    """Consume the normalized topic until ``stop`` is set (or SIGTERM/SIGINT when it is None)."""
    settings = settings or JourneySettings()
    if stop is None:  # this process is ours
        configure_logging("journey-worker", level=settings.log_level, json=settings.log_json)
        tune_gc()
    await ensure_topics(  # the outbox relay also sends the erasure commands (privacy topic)
        settings,
        [
            settings.topic_normalized,
            settings.topic_activity,
            settings.topic_dead_letter,
            settings.topic_privacy,
        ],
    )
    db = Database(settings.dsn, pool_size=5, application_name="journey-worker")
    producer = make_producer(settings)
    consumer = make_consumer(
        settings,
        group_id=settings.consumer_group,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(settings.session_timeout_ms // 10, 100),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_poll_records=settings.batch_size,
        **consumer_overrides,
    )
    await producer.start()
    await consumer.start()
    # The outbox relay (the activity, after each commit) runs beside the consumer loop.
    relay, relay_tasks, relay_stop = start_relay(db, producer, settings)
    processor = JourneyProcessor(db=db, producer=producer, settings=settings, on_commit=relay.wake)
    worker = BatchWorker(
        service="journey",
        consumer=consumer,
        topics=[settings.topic_normalized],
        handle=processor.handle,
        max_records=settings.batch_size,  # what is held at once sets the peak RSS
    )
    log.info("worker.started", topic=settings.topic_normalized, group=settings.consumer_group)
    # The journey map is folded by `waypoint worker journey maps`; here only when asked to.
    compactor = start_compactor(db, settings) if settings.map_compactor_in_worker else None
    try:
        await run_until_stopped(worker, stop)
    finally:
        await stop_compactor(compactor)
        await processor.close()
        await consumer.stop()
        await stop_relay(relay, relay_tasks, relay_stop)  # publishes what is committed first
        await producer.stop()
        await db.dispose()
        log.info("worker.stopped")
