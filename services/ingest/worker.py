"""The ingest worker: raw topic → validate → event store → normalized topic → commit offsets.

Per batch: one transaction stores new events (duplicates skipped by primary key) and logs
dead letters; then every valid event is produced to the normalized topic and every refused
record to the dead-letter topic, and all sends are awaited; only then does ``BatchWorker``
commit the offsets. A crash anywhere repeats the batch: storing is idempotent, publishing is
at least once (journey dedupes on tenant and event id).

A record's own fault, at any step, dead-letters that record and the partition moves on:
validation (with a reason), a failure in a step validation should have caught (``unprocessable``),
a value the database refuses (SQLSTATE class 22, 23, 54; found row by row), a message too large
to publish. Everything else (database or broker down) raises, and the batch is retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from services.ingest import metrics
from services.ingest.batch import REFUSED, Accepted, Plan, classify, plan
from services.ingest.config import IngestSettings
from services.ingest.publish import (
    STRUCTURED_HEADERS,
    max_message_bytes,
    publish,
    send_dead_letters,
)
from services.ingest.records import (
    Limits,
    Rejection,
    best_effort_identity,
    bounded_text,
    dead_letter_headers,
    payload_digest,
)
from services.ingest.repository import store_dead_letters, store_events
from shared.auth.tenants import tenant_regions
from shared.db import Database, raw_connection
from shared.events import EventRejected, RejectReason
from shared.faults import crash_point
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.logging import configure_logging, get_logger
from shared.privacy import tombstones
from shared.privacy.crypto import Keyring
from shared.privacy.masking import mask_payload
from shared.privacy.metrics import ERASED_DROPPED
from shared.privacy.sealing import seal, tenants_to_seal
from shared.worker import BatchWorker, is_data_fault, run_until_stopped, tune_gc

log = get_logger("ingest.worker")


class TenantCache:
    """Tenants and their own phone regions, re-read when an unknown tenant shows up (at most
    once per ``min_interval``) and once older than ``max_age`` (so a changed region applies)."""

    def __init__(
        self,
        load: Callable[[], Awaitable[dict[str, str | None]]],
        min_interval: float,
        max_age: float = math.inf,
    ):
        self._load = load
        self._min_interval = min_interval
        self._max_age = max_age
        self._loaded_at = -math.inf
        self.regions: dict[str, str | None] = {}

    async def fresh(self) -> dict[str, str | None]:
        if time.monotonic() - self._loaded_at >= self._max_age:
            await self._reload()
        return self.regions

    async def cover(self, tenants: set[str]) -> dict[str, str | None]:
        age = time.monotonic() - self._loaded_at
        if age >= self._max_age or (
            not tenants <= self.regions.keys() and age >= self._min_interval
        ):
            await self._reload()
        return self.regions

    async def _reload(self) -> None:
        self.regions = await self._load()
        self._loaded_at = time.monotonic()


class IngestHandler:
    def __init__(self, settings: IngestSettings, db: Database, producer: AIOKafkaProducer):
        self.settings = settings
        self.db = db
        self.producer = producer
        self.limits = Limits(
            max_bytes=settings.max_event_bytes,
            max_future=settings.max_future,
            phone_region=settings.phone_region,
        )
        self.tenants = TenantCache(
            self._load_tenants, settings.tenant_refresh_seconds, settings.tenant_cache_seconds
        )
        self.keyring = Keyring.from_setting(settings.sealing_keys)

    async def _load_tenants(self) -> dict[str, str | None]:
        async with self.db.session() as session:
            return await tenant_regions(session)

    async def handle(self, records: Sequence[Any]) -> None:
        now = datetime.now(UTC)
        accepted, refused, known = await self.classify(records, now)
        accepted = await self.drop_erased(accepted, known)
        await self.seal(accepted, known)
        work = plan(
            accepted,
            refused,
            known_tenants=known,
            received_at=now,
            max_message_bytes=max_message_bytes(self.producer),
        )
        started = time.perf_counter()
        crash_point("ingest", "before_store")
        try:
            stored = await self.store(work)
        except Exception as exc:
            if not is_data_fault(exc):
                raise  # the database is unreachable, or a bug: retry the batch
            # Valid JSON the database still refuses must not stall the partition: find it.
            log.warning("batch.refused_by_database", rows=len(work.rows), error=str(exc))
            stored = await self.store_one_by_one(work)
        metrics.STORE_SECONDS.observe(time.perf_counter() - started)
        crash_point("ingest", "after_store")
        published = await self._publish(work)
        self._count(work, stored, published)

    async def classify(
        self, records: Sequence[Any], now: datetime
    ) -> tuple[list[Accepted], list[tuple[Any, EventRejected]], set[str]]:
        """Validate every record with its tenant's phone region; the tenants known by then."""
        regions = await self.tenants.fresh()
        accepted, refused = classify(records, now=now, limits=self._limits(regions))
        named = {a.envelope.tenant for a in accepted}
        for record, _exc in refused:  # so a reject can be shown to its tenant
            named.add(best_effort_identity(record.value, record.headers)[0] or "")
        unseen = named - regions.keys() - {""}
        if unseen:
            regions = await self.tenants.cover(unseen)
            if any(regions.get(t) for t in unseen):  # new tenants with their own region
                accepted, refused = classify(records, now=now, limits=self._limits(regions))
        return accepted, refused, set(regions)

    async def drop_erased(self, accepted: list[Accepted], known: set[str]) -> list[Accepted]:
        """Events carrying an erased identifier are dropped and counted, never stored, published
        or dead-lettered (their values must not come back: a late event, a replay, a redrive)."""
        ours = [a for a in accepted if a.envelope.tenant in known]
        if not ours:
            return accepted
        async with self.db.session() as session:
            conn = await raw_connection(session)
            gone = await tombstones.erased(conn, self.keyring, "ingest", [a.envelope for a in ours])
        if not gone:
            return accepted
        ERASED_DROPPED.labels("ingest").inc(len(gone))
        dropped = {id(ours[i]) for i in gone}
        return [a for a in accepted if id(a) not in dropped]

    async def seal(self, accepted: Sequence[Accepted], known: set[str]) -> None:
        """Sensitive values are stored and published sealed (docs/security.md)."""
        ours = [a.envelope for a in accepted if a.envelope.tenant in known]
        tenants = tenants_to_seal(ours)
        if tenants:
            async with self.db.session() as session:
                await self.keyring.ensure(await raw_connection(session), tenants)
        for envelope in ours:
            seal(envelope, self.keyring)

    def _limits(self, regions: dict[str, str | None]) -> Limits:
        return dataclasses.replace(self.limits, tenant_regions=regions)

    async def store(self, work: Plan) -> dict[str, int]:
        """New events and the dead-letter log, in one transaction."""
        async with self.db.session() as session:
            stored = await store_events(session, work.rows)
            await store_dead_letters(session, self._dead_letter_rows(work.rejects))
        work.publish_as_stored(stored.earlier)
        return stored.new

    async def store_one_by_one(self, work: Plan) -> dict[str, int]:
        """Each row in its own transaction; rows the database refuses become dead letters."""
        stored: dict[str, int] = {}
        index = 0
        while index < len(work.rows):
            row = work.rows[index]
            try:
                async with self.db.session() as session:
                    result = await store_events(session, [row])
                for channel, n in result.new.items():
                    stored[channel] = stored.get(channel, 0) + n
                work.publish_as_stored(result.earlier)
            except Exception as exc:
                if not is_data_fault(exc):
                    raise
                message = f"the database refused it: {exc}"
                work.drop_row(index, Rejection(RejectReason.schema, message, row[0], row[1]))
                continue
            index += 1
        async with self.db.session() as session:
            await store_dead_letters(session, self._dead_letter_rows(work.rejects))
        return stored

    def _dead_letter_rows(self, rejects: list[tuple[Any, Rejection]]) -> list[tuple[Any, ...]]:
        limit = self.settings.dead_letter_payload_bytes
        return [
            (
                rejection.tenant,
                rejection.reason.value,
                rejection.message.replace("\x00", ""),
                rejection.event_id,
                record.topic,
                record.partition,
                record.offset,
                bounded_text(_masked(record.value), limit),
                len(record.value or b""),
                payload_digest(record.value),
            )
            for record, rejection in rejects
        ]

    async def _publish(self, work: Plan) -> int:
        """Publish the stored events, then the dead letters; returns how many were published.

        A stored event the broker refuses as too large (its limit is below what was checked
        before storing) is dead-lettered too: it stays stored, and a redrive after the limit is
        raised publishes it as stored."""
        started = time.perf_counter()
        refused = await publish(
            self.producer, self.settings.topic_normalized, work.publish, STRUCTURED_HEADERS
        )
        if refused:
            late = [
                (
                    work.sources[i],
                    Rejection(
                        RejectReason.oversized,
                        f"stored, but the broker refused to publish its normalized form "
                        f"({len(work.publish[i][1])} bytes) as too large",
                        work.rows[i][0],
                        work.rows[i][1],
                    ),
                )
                for i in refused
            ]
            async with self.db.session() as session:
                await store_dead_letters(session, self._dead_letter_rows(late))
            work.rejects.extend(late)
        for record, rejection in work.rejects:
            if rejection.reason is RejectReason.unprocessable:
                log.warning(
                    "record.unprocessable",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=rejection.message[:500],
                )
        await send_dead_letters(
            self.producer,
            self.settings.topic_dead_letter,
            [
                (
                    record.key,
                    record.value,
                    dead_letter_headers(
                        record.headers,
                        rejection,
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                    ),
                )
                for record, rejection in work.rejects
            ],
            fallback_bytes=self.settings.dead_letter_payload_bytes,
        )
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return len(work.publish) - len(refused)

    def _count(self, work: Plan, stored: dict[str, int], published: int) -> None:
        for channel, n in work.received.items():
            metrics.EVENTS_RECEIVED.labels(channel or "none").inc(n)
            if channel == REFUSED:
                continue
            new = stored.get(channel, 0)
            if new:
                metrics.EVENTS_STORED.labels(channel or "none").inc(new)
            if n > new:
                metrics.EVENTS_DUPLICATE.labels(channel or "none").inc(n - new)
        for _record, rejection in work.rejects:
            metrics.EVENTS_DEAD_LETTERED.labels(rejection.reason.value).inc()
        metrics.EVENTS_PUBLISHED.inc(published)


def _masked(value: bytes | None) -> bytes | None:
    """A refused record as the operators' table keeps it: sensitive values masked (the
    dead-letter topic keeps the bytes for a redrive)."""
    if not value or b"sensitive" not in value:
        return value
    return mask_payload(value.decode("utf-8", errors="replace")).encode()


async def run(settings: IngestSettings, *, stop: asyncio.Event | None = None) -> None:
    """Consume the raw topic until stopped (SIGTERM/SIGINT, or ``stop`` when given)."""
    if stop is None:  # this process is ours
        configure_logging("ingest-worker", level=settings.log_level, json=settings.log_json)
        tune_gc()
    await ensure_topics(
        settings, [settings.topic_raw, settings.topic_normalized, settings.topic_dead_letter]
    )
    db = Database(settings.dsn, pool_size=2, application_name="ingest-worker")
    producer = make_producer(settings)
    consumer = make_consumer(
        settings,
        group_id=settings.consumer_group,
        max_poll_records=settings.batch_size,
        session_timeout_ms=settings.session_timeout_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        heartbeat_interval_ms=min(1000, settings.session_timeout_ms // 3),
    )
    handler = IngestHandler(settings, db, producer)
    worker = BatchWorker(
        service="ingest",
        consumer=consumer,
        topics=[settings.topic_raw],
        handle=handler.handle,
        max_records=settings.batch_size,
        poll_timeout_ms=settings.poll_timeout_ms,
    )
    await producer.start()
    await consumer.start()
    log.info("worker.started", topic=settings.topic_raw, group=settings.consumer_group)
    try:
        await run_until_stopped(worker, stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await db.dispose()
        log.info("worker.stopped", batches=worker.batches)
