"""Journey's outbox: the customer activity (for alerts) leaves through ``journey.outbox``.

The worker writes a chunk's activity in the chunk's transaction; manual merge, split and agent
facts write theirs in the command's transaction (and NOTIFY the relays). The relay is a task of
the journey worker process (``start_relay``, with the commands' Idempotency-Key housekeeping);
see ``shared/outbox.py`` for its guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from services.journey.config import JourneySettings
from shared import idempotency, outbox
from shared.db import Database, raw_connection
from shared.events.activity import CustomerActivity
from shared.logging import get_logger

SCHEMA = "journey"
PURGE_EVERY_SECONDS = 600.0
log = get_logger("journey.outbox")


def activity_messages(
    topic: str, activities: Sequence[tuple[bytes, bytes]]
) -> list[outbox.Message]:
    """(key, value) pairs of the activity topic (keyed ``tenant|customer``) as outbox messages."""
    return [
        outbox.Message(key.partition(b"|")[0].decode(), topic, key, value)
        for key, value in activities
    ]


async def enqueue_activity(
    conn: asyncpg.Connection, settings: JourneySettings, activity: CustomerActivity
) -> None:
    """A command's activity, in the command's transaction; the relays wake at its commit."""
    message = outbox.Message(
        activity.tenant, settings.topic_activity, activity.kafka_key(), activity.to_json()
    )
    await outbox.enqueue(conn, SCHEMA, [message], lanes=settings.outbox_lanes)
    await outbox.notify(conn, settings.outbox_channel)


def relay_for(
    db: Database, producer: AIOKafkaProducer, settings: JourneySettings
) -> outbox.OutboxRelay:
    return outbox.OutboxRelay(
        service="journey",
        schema=SCHEMA,
        db=db,
        producer=producer,
        dsn=settings.dsn,
        notify_channel=settings.outbox_channel,
        lanes=settings.outbox_lanes,
        batch_size=settings.outbox_batch_size,
        publish_timeout_seconds=settings.outbox_publish_timeout_seconds,
        poll_seconds=settings.outbox_poll_seconds,
    )


async def purge_idempotency_keys(
    db: Database, settings: JourneySettings, stop: asyncio.Event
) -> None:
    """Delete expired Idempotency-Keys every few minutes (lookups ignore them anyway)."""
    retention = timedelta(hours=settings.idempotency_key_hours)
    while not stop.is_set():
        try:
            async with db.session() as session:
                purged = await idempotency.purge(await raw_connection(session), SCHEMA, retention)
            if purged:
                log.info("idempotency.purged", keys=purged)
        except Exception as exc:  # noqa: BLE001 - housekeeping: try again next time
            log.warning("idempotency.purge_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PURGE_EVERY_SECONDS)


def start_relay(
    db: Database, producer: AIOKafkaProducer, settings: JourneySettings
) -> tuple[outbox.OutboxRelay, list[asyncio.Task[None]], asyncio.Event]:
    """The relay (and the keys' housekeeping) as tasks of the worker process."""
    relay = relay_for(db, producer, settings)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(purge_idempotency_keys(db, settings, stop)),
    ]
    return relay, tasks, stop


async def stop_relay(
    relay: outbox.OutboxRelay, tasks: list[asyncio.Task[None]], stop: asyncio.Event
) -> None:
    """Stop after a last drain (bounded by the publish timeout), then close the listener."""
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await relay.close()
