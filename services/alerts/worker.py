"""The alerts worker: consumes customer activity, keeps scores, opens and resolves alerts.

One Kafka batch = one transaction (idempotent on activity id), offsets committed after it.
Bad records go to the dead-letter topic with a reason; nothing stalls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from services.alerts.config import AlertsSettings
from services.alerts.engine import Effects, process_activities
from services.alerts.metrics import ACTIVITIES, ALERTS_OPENED, ALERTS_RESOLVED
from shared.db import Database, raw_connection
from shared.events.activity import CustomerActivity
from shared.kafka import make_consumer, make_producer
from shared.logging import configure_logging, get_logger
from shared.worker import BatchWorker, install_signal_handlers

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


def parse_records(
    records: list[ConsumerRecord[bytes, bytes]],
) -> tuple[list[CustomerActivity], list[tuple[ConsumerRecord[bytes, bytes], str]]]:
    good: list[CustomerActivity] = []
    bad: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
    for record in records:
        try:
            good.append(CustomerActivity.model_validate_json(record.value or b""))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "activity"
            bad.append((record, f"{where}: {first['msg']}"[:500]))
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
        activities, bad = parse_records(records)
        for record, reason in bad:
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
        if not activities:
            return
        async with self.db.session() as session:
            conn = await raw_connection(session)
            effects = await process_activities(
                conn, activities, now=self.clock(), default_owner=self.settings.default_owner
            )
        count_effects(effects)


async def run(
    settings: AlertsSettings, *, stop: asyncio.Event | None = None, clock: Clock = utcnow
) -> None:
    """Consume ``topic_activity`` until ``stop`` is set (or SIGTERM / SIGINT)."""
    if stop is None:
        configure_logging("alerts-worker", level=settings.log_level, json=settings.log_json)
    db = Database(settings.dsn, pool_size=2, application_name="alerts-worker")
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
    await producer.start()
    await consumer.start()
    own_stop = stop or asyncio.Event()
    if stop is None:
        install_signal_handlers(own_stop.set)
    task = asyncio.create_task(worker.run())
    try:
        await until_stopped(task, own_stop)
        worker.stop()
        await task
    finally:
        if not task.done():
            task.cancel()
        await consumer.stop()
        await producer.stop()
        await db.dispose()
