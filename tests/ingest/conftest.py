"""Ingest fixtures: per-test topics and consumer groups, a worker running in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.config import IngestSettings
from services.ingest.worker import run
from shared.config import CommonSettings
from shared.db import Database
from shared.kafka import ensure_topics, make_consumer
from shared.migrations import upgrade


@pytest.fixture(scope="session")
async def db(settings: CommonSettings) -> AsyncIterator[Database]:
    """Only the schemas ingest uses (auth, ingest): other services' migrations are not needed."""
    database = Database(settings.dsn, pool_size=5, application_name="tests-ingest")
    await upgrade(database, ["auth", "ingest"])
    await ensure_topics(settings)
    yield database
    await database.dispose()


@pytest.fixture
async def ingest_settings(settings_overrides: dict[str, Any], db: Database) -> IngestSettings:
    """Settings with this test's own topics and consumer group (workers never share data)."""
    run_id = uuid.uuid4().hex[:8]
    settings = IngestSettings(
        **{
            **settings_overrides,
            "topic_raw": f"ingest-{run_id}.raw",
            "topic_normalized": f"ingest-{run_id}.normalized",
            "topic_dead_letter": f"ingest-{run_id}.deadletter",
            "topic_partitions": 2,
        },
        consumer_group=f"ingest-test-{run_id}",
        session_timeout_ms=6000,
        tenant_refresh_seconds=0.0,
        poll_timeout_ms=50,
    )
    await ensure_topics(
        settings, [settings.topic_raw, settings.topic_normalized, settings.topic_dead_letter]
    )
    return settings


@pytest.fixture
async def worker(ingest_settings: IngestSettings) -> AsyncIterator[Callable[[], None]]:
    """An ingest worker consuming this test's raw topic until the test ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(ingest_settings, stop=stop))
    yield stop.set
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)


async def produce(
    producer: AIOKafkaProducer,
    topic: str,
    values: list[bytes | None],
    *,
    headers: list[tuple[str, bytes]] | None = None,
    key: bytes | None = None,
) -> None:
    pending = [await producer.send(topic, value=v, key=key, headers=headers) for v in values]
    await asyncio.gather(*pending)


async def stored_ids(db: Database, tenant: str) -> list[str]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT event_id FROM ingest.event WHERE tenant_id = :t ORDER BY event_id"),
            {"t": tenant},
        )
        return [r[0] for r in rows]


async def read_topic(
    settings: IngestSettings,
    topic: str,
    *,
    expect: int = 0,
    until: Callable[[list[Any]], bool] | None = None,
    timeout: float = 30,
):
    """Records of ``topic`` from the start, once ``expect`` have arrived (or ``until`` holds)."""
    done = until or (lambda records: len(records) >= expect)
    consumer = make_consumer(
        settings, topic, group_id=f"reader-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(records) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for recs in batches.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records
