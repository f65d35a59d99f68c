"""Applying erasure commands: each service runs one consumer of the privacy topic (its process
``privacy``) that applies a command in one transaction with its report to ``auth.erasure_step``,
then commits the offset. Applying twice erases nothing more and reports the same row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from shared.config import CommonSettings
from shared.db import Database, raw_connection
from shared.events.erasure import CustomerErasureRequested
from shared.kafka import ensure_topics, make_consumer
from shared.logging import get_logger
from shared.privacy.metrics import ERASURE_SECONDS, ERASURES_APPLIED
from shared.privacy.retention import run_purges
from shared.worker import BatchWorker, run_until_stopped

log = get_logger("privacy.erasure")

Apply = Callable[[asyncpg.Connection, CustomerErasureRequested], Awaitable[dict[str, int]]]


async def report(
    conn: asyncpg.Connection, erasure_id: str, service: str, counts: dict[str, int]
) -> None:
    """The service's completion (the first report stands: a replay finds nothing left)."""
    await conn.execute(
        "INSERT INTO auth.erasure_step (erasure_id, service, counts) VALUES ($1::uuid, $2, $3) "
        "ON CONFLICT DO NOTHING",
        erasure_id,
        service,
        orjson.dumps(counts).decode(),
    )


class ErasureHandler:
    def __init__(self, db: Database, service: str, apply: Apply):
        self.db = db
        self.service = service
        self.apply = apply

    async def __call__(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            try:
                command = CustomerErasureRequested.model_validate_json(record.value or b"")
            except ValidationError as exc:
                # Only journey's API writes this topic; a record it cannot have written is
                # logged and counted, never retried forever.
                log.error("erasure.unreadable", offset=record.offset, error=str(exc)[:300])
                continue
            started = time.perf_counter()
            async with self.db.session() as session:
                conn = await raw_connection(session)
                counts = await self.apply(conn, command)
                await report(conn, command.erasure_id, self.service, counts)
            ERASURES_APPLIED.labels(self.service).inc()
            ERASURE_SECONDS.labels(self.service).observe(time.perf_counter() - started)
            log.info("erasure.applied", erasure_id=command.erasure_id, **counts)


async def run_consumer(
    settings: CommonSettings,
    *,
    service: str,
    group_id: str,
    apply: Apply,
    stop: asyncio.Event | None = None,
) -> None:
    """Consume the privacy topic until stopped, applying each command with ``apply``; purge
    what is past retention in the background (shared/privacy/retention.py)."""
    await ensure_topics(settings, [settings.topic_privacy])
    db = Database(settings.dsn, pool_size=2, application_name=f"{service}-privacy")
    consumer = make_consumer(settings, group_id=group_id, max_poll_records=50)
    worker = BatchWorker(
        service=f"{service}-privacy",
        consumer=consumer,
        topics=[settings.topic_privacy],
        handle=ErasureHandler(db, service, apply),
        max_records=50,
        poll_timeout_ms=200,
    )
    await consumer.start()
    log.info("privacy.started", service=service, topic=settings.topic_privacy)
    purging = asyncio.Event()
    purges = asyncio.create_task(run_purges(db, service, settings, purging))
    try:
        await run_until_stopped(worker, stop)
    finally:
        purging.set()
        await purges
        await consumer.stop()
        await db.dispose()


def sealed_keys(value: Any) -> list[str]:
    """The opened ``identifiers_sealed`` of a command: a list of ``"type:value"``."""
    return [str(k) for k in value] if isinstance(value, list) else []
