"""The alerts worker: consumes customer activity, keeps scores, opens and resolves alerts.

One Kafka batch = one transaction (idempotent on activity id), offsets committed after it.
Records that are not valid activities, and activities whose values the database refuses (found
one by one), go to the dead-letter topic with a reason; nothing stalls. Any other failure (an
outage, a bug in the engine) propagates: ``BatchWorker`` retries the batch with backoff, counts
it and never commits past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from services.alerts.config import AlertsSettings
from services.alerts.engagement import relay_for
from services.alerts.engine import Effects, process_activities
from services.alerts.metrics import ACTIVITIES, ALERTS_OPENED, ALERTS_RESOLVED
from services.alerts.privacy import without_erased
from shared.db import Database, raw_connection
from shared.events.activity import CustomerActivity
from shared.faults import crash_point
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.logging import configure_logging, get_logger
from shared.worker import BatchWorker, is_data_fault, run_until_stopped

Clock = Callable[[], datetime]
log = get_logger("alerts.worker")


def utcnow() -> datetime:
    return datetime.now(UTC)


async def until_stopped(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Wait for ``stop``; if ``task`` dies first, re-raise its error (never hang silently)."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task in done:
        task.result()


Parsed = tuple[ConsumerRecord[bytes, bytes], CustomerActivity]


def activity_problem(activity: CustomerActivity) -> str | None:
    """What the schema cannot hold, said before it reaches the database."""
    if not 1 <= len(activity.tenant) <= 64:
        return "tenant: must be 1-64 characters"
    ids = [activity.customer_id, activity.account_id or "x", *activity.merged_ids]
    if any(not 1 <= len(i) <= 256 for i in [*ids, *activity.split_ids]):
        return "customer_id/account_id/merged_ids/split_ids: must be 1-256 characters"
    if activity.kind == "event" and not isinstance((activity.event or {}).get("type"), str):
        return "event: an event activity needs the normalized event with its type"
    return None


def parse_records(
    records: list[ConsumerRecord[bytes, bytes]],
) -> tuple[list[Parsed], list[tuple[ConsumerRecord[bytes, bytes], str]]]:
    good: list[Parsed] = []
    bad: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
    for record in records:
        try:
            activity = CustomerActivity.model_validate_json(record.value or b"")
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "activity"
            bad.append((record, f"{where}: {first['msg']}"[:500]))
            continue
        problem = activity_problem(activity)
        if problem:
            bad.append((record, problem))
        else:
            good.append((record, activity))
    return good, bad


def count_effects(effects: Effects) -> None:
    """Metrics after commit (a retried batch is not counted twice)."""
    ACTIVITIES.labels("applied").inc(effects.applied)
    ACTIVITIES.labels("duplicate").inc(effects.duplicates)
    for alert in effects.opened:
        ALERTS_OPENED.labels(alert["rule"]).inc()
    for _id, why, rule in effects.resolved:
        ALERTS_RESOLVED.labels(rule, why).inc()


class ActivityHandler:
    def __init__(
        self,
        settings: AlertsSettings,
        db: Database,
        producer: AIOKafkaProducer,
        clock: Clock = utcnow,
    ):
        self.settings = settings
        self.db = db
        self.producer = producer
        self.clock = clock

    async def __call__(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        parsed, bad = parse_records(records)
        for record, reason in bad:
            await self.dead_letter(record, reason)
        if not parsed:
            return
        try:
            await self.apply([a for _, a in parsed])
        except Exception as exc:
            if not is_data_fault(exc):
                raise  # an outage or a bug: BatchWorker retries, counts, never skips it
            # one record spoils the batch: apply them one by one, dead-letter the culprits
            log.warning("batch.bad_input", records=len(parsed), error=str(exc))
            for record, activity in parsed:
                try:
                    await self.apply([activity])
                except Exception as one:
                    if not is_data_fault(one):
                        raise
                    await self.dead_letter(record, f"{type(one).__name__}: {one}"[:500])

    async def apply(self, activities: list[CustomerActivity]) -> None:
        crash_point("alerts", "before_store")
        async with self.db.session() as session:
            conn = await raw_connection(session)
            activities = await without_erased(conn, activities)
            effects = await process_activities(
                conn, activities, now=self.clock(), default_owner=self.settings.default_owner
            )
        count_effects(effects)

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        await self.producer.send_and_wait(
            self.settings.topic_dead_letter,
            record.value,
            key=record.key,
            headers=[
                ("waypoint-reason", b"invalid_activity"),
                ("waypoint-error", reason.encode()),
                ("waypoint-source-topic", record.topic.encode()),
            ],
        )
        ACTIVITIES.labels("dead_lettered").inc()
        log.warning("activity.dead_lettered", reason=reason)


async def run(
    settings: AlertsSettings, *, stop: asyncio.Event | None = None, clock: Clock = utcnow
) -> None:
    """Consume ``topic_activity`` until ``stop`` is set (or SIGTERM / SIGINT), and relay the
    engagement changes it (and the scheduler and API) commits to ``topic_engagement``."""
    if stop is None:
        configure_logging("alerts-worker", level=settings.log_level, json=settings.log_json)
    await ensure_topics(settings, [settings.topic_engagement])
    db = Database(settings.dsn, pool_size=3, application_name="alerts-worker")
    producer = make_producer(settings)
    consumer = make_consumer(
        settings,
        group_id=settings.consumer_group,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        max_poll_records=2000,
    )
    worker = BatchWorker(
        service="alerts",
        consumer=consumer,
        topics=[settings.topic_activity],
        handle=ActivityHandler(settings, db, producer, clock),
        max_records=2000,
        poll_timeout_ms=50,
    )
    relay = relay_for(settings, db, producer)  # engagement changes → journey
    relay_stop = asyncio.Event()
    await producer.start()
    await consumer.start()
    relaying = asyncio.create_task(relay.run(relay_stop))
    try:
        await run_until_stopped(worker, stop)
    finally:
        relay_stop.set()
        await asyncio.wait_for(relaying, 30)
        await relay.close()
        await consumer.stop()
        await producer.stop()
        await db.dispose()
