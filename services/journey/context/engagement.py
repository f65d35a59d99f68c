"""The engagement consumer: the alerts service's engagement changes → the agent's context.

It consumes ``topic_engagement`` (``CustomerEngagementChanged``, keyed by tenant|customer) in its
own consumer group (``waypoint worker journey engagement``) and folds each customer's latest
message into the context document, one transaction per batch, offsets committed after it:

- ordering-safe and idempotent: a document's engagement is replaced only by a higher version, so
  a replayed, duplicated or late message changes nothing (``rules.fold_engagement``);
- a change bumps the document's version and is NOTIFYed in the transaction, so every API process
  drops its cached copy and live streams push the new card (the existing NOTIFY path);
- a record that is not a valid engagement change, or one the database refuses, goes to the
  dead-letter topic (``journey_engagement_unparsable`` / ``journey_engagement_apply_failed``)
  and the partition moves on; any other failure is retried by ``BatchWorker``, never skipped;
- a change for a customer merged into another one meanwhile is counted (``merged_away``) and
  dropped at once: alerts hears of the merge too and scores the survivor, whose change follows;
- a change for a customer journey has not stored yet is retried a few times, 0.2 s apart, then
  counted (``unknown_customer``) and dropped: the next change carries the whole state. (Since
  journey publishes its activity through its outbox, after commit, this means a customer erased
  or never stored here.)

Journey never reads the alerts schema: this topic is all it knows of engagement.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from services.journey.config import JourneySettings
from services.journey.context import repository as repo
from services.journey.context import rules as ctx
from services.journey.metrics import ENGAGEMENT
from shared.db import Database, raw_connection
from shared.events.engagement import CustomerEngagementChanged
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.logging import configure_logging, get_logger
from shared.worker import BatchWorker, is_data_fault, run_until_stopped

log = get_logger("journey.engagement")

Key = tuple[str, uuid.UUID]
Latest = dict[Key, tuple[ConsumerRecord[bytes, bytes], CustomerEngagementChanged]]
UNKNOWN_RETRY_SECONDS = 0.2


def engagement_entry(change: CustomerEngagementChanged) -> dict[str, Any]:
    """What the context document keeps of a change (the key fields are the document's own)."""
    return change.model_dump(mode="json", exclude={"schema_", "tenant", "customer_id"})


def parse(
    records: list[ConsumerRecord[bytes, bytes]],
) -> tuple[Latest, list[tuple[ConsumerRecord[bytes, bytes], str]]]:
    """The latest valid change per customer of the batch, and the records that are not one."""
    latest: Latest = {}
    bad: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
    for record in records:
        try:
            change = CustomerEngagementChanged.model_validate_json(record.value or b"")
            key = (change.tenant, uuid.UUID(change.customer_id))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "record"
            bad.append((record, f"{where}: {first['msg']}"[:500]))
            continue
        except ValueError:
            bad.append((record, "customer_id: not a journey customer id (a UUID)"))
            continue
        known = latest.get(key)
        if known is None or change.version > known[1].version:
            latest[key] = (record, change)
    return latest, bad


class EngagementFolder:
    def __init__(self, *, db: Database, producer: AIOKafkaProducer, settings: JourneySettings):
        self.db = db
        self.producer = producer
        self.settings = settings

    async def handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        latest, bad = parse(records)
        for record, reason in bad:
            await self.dead_letter(record, "journey_engagement_unparsable", reason)
        pending = await self.apply_isolating(latest)
        for _ in range(self.settings.engagement_unknown_retries):
            if not pending:
                break
            await asyncio.sleep(UNKNOWN_RETRY_SECONDS)
            pending = await self.apply_isolating(pending)
        for (tenant, cid), (_, change) in pending.items():
            ENGAGEMENT.labels("unknown_customer").inc()
            log.warning(
                "engagement.unknown_customer",
                tenant=tenant,
                customer_id=str(cid),
                version=change.version,
            )

    async def apply_isolating(self, latest: Latest) -> Latest:
        """``apply``; when the database refuses the batch's data, one by one, dead-lettering
        the culprits. Returns the changes of customers not found."""
        try:
            return await self.apply(latest)
        except Exception as exc:
            if not is_data_fault(exc):
                raise  # an outage or a bug: BatchWorker retries, counts, never skips it
            if len(latest) > 1:
                missing: Latest = {}
                for key, item in latest.items():
                    missing.update(await self.apply_isolating({key: item}))
                return missing
            record = next(iter(latest.values()))[0]
            await self.dead_letter(
                record, "journey_engagement_apply_failed", f"{type(exc).__name__}: {exc}"
            )
            return {}

    async def apply(self, latest: Latest) -> Latest:
        """Fold the changes into their documents in one transaction; returns the changes whose
        customer has no context (yet)."""
        missing: Latest = {}
        if not latest:
            return missing
        applied = stale = 0
        async with self.db.session() as session:
            conn = await raw_connection(session)
            locked = await repo.lock_contexts(conn, list(latest))
            saves, notices = [], []
            for key, (record, change) in latest.items():
                if key not in locked:
                    missing[key] = (record, change)
                    continue
                doc, version = locked[key]
                if not ctx.fold_engagement(doc, engagement_entry(change)):
                    stale += 1
                    continue
                saves.append((key[0], key[1], orjson.dumps(doc), version + 1))
                notices.append(f"{key[0]}|{key[1]}|{version + 1}")
                applied += 1
            await repo.save_contexts(conn, saves)
            await repo.notify(conn, self.settings.notify_channel, notices)
            merged = await repo.merged_away(conn, list(missing))
        for key in merged:
            del missing[key]
        ENGAGEMENT.labels("merged_away").inc(len(merged))
        ENGAGEMENT.labels("applied").inc(applied)
        ENGAGEMENT.labels("stale").inc(stale)
        return missing

    async def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, message: str
    ) -> None:
        await self.producer.send_and_wait(
            self.settings.topic_dead_letter,
            record.value,
            key=record.key,
            headers=[
                ("waypoint-reason", reason.encode()),
                ("waypoint-error", message[:1000].encode()),
                ("waypoint-service", b"journey"),
                ("waypoint-source-topic", record.topic.encode()),
            ],
        )
        ENGAGEMENT.labels("dead_lettered").inc()
        log.warning("engagement.dead_lettered", reason=reason, error=message)


async def run(
    settings: JourneySettings | None = None, *, stop: asyncio.Event | None = None
) -> None:
    """Consume the engagement topic until ``stop`` is set (or SIGTERM/SIGINT when it is None)."""
    settings = settings or JourneySettings()
    if stop is None:
        configure_logging("journey-engagement", level=settings.log_level, json=settings.log_json)
    await ensure_topics(settings, [settings.topic_engagement, settings.topic_dead_letter])
    db = Database(settings.dsn, pool_size=2, application_name="journey-engagement")
    producer = make_producer(settings)
    consumer = make_consumer(
        settings,
        group_id=settings.engagement_consumer_group,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(settings.session_timeout_ms // 10, 100),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_poll_records=2000,
    )
    worker = BatchWorker(
        service="journey-engagement",
        consumer=consumer,
        topics=[settings.topic_engagement],
        handle=EngagementFolder(db=db, producer=producer, settings=settings).handle,
        max_records=2000,
        poll_timeout_ms=50,
    )
    await producer.start()
    await consumer.start()
    log.info("engagement.started", topic=settings.topic_engagement)
    try:
        await run_until_stopped(worker, stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await db.dispose()
