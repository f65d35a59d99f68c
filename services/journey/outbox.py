"""Journey's outbox: the customer activity (for alerts) leaves through ``journey.outbox``.

The worker writes a chunk's activity in the chunk's transaction; manual merge, split and agent
facts write theirs in the command's transaction (and NOTIFY the relays). The relay is a task of
the journey worker process (``start_relay``); see ``shared/outbox.py`` for its guarantees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from aiokafka import AIOKafkaProducer

from services.journey.config import JourneySettings
from shared import outbox
from shared.db import Database
from shared.events.activity import CustomerActivity

SCHEMA = "journey"


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


def start_relay(
    db: Database, producer: AIOKafkaProducer, settings: JourneySettings
) -> tuple[outbox.OutboxRelay, asyncio.Task[None], asyncio.Event]:
    relay = relay_for(db, producer, settings)
    stop = asyncio.Event()
    return relay, asyncio.create_task(relay.run(stop)), stop


async def stop_relay(
    relay: outbox.OutboxRelay, task: asyncio.Task[None], stop: asyncio.Event
) -> None:
    """Stop after a last drain (bounded by the publish timeout), then close the listener."""
    stop.set()
    await asyncio.gather(task, return_exceptions=True)
    await relay.close()
