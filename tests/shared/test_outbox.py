"""The transactional outbox: only committed messages go out, none is lost while the broker is
down, and two relays never reorder one key's messages."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from shared import outbox
from shared.config import CommonSettings
from shared.db import Database, raw_connection
from shared.embedded import start_broker
from shared.kafka import ensure_topics, make_consumer, make_producer


@pytest.fixture
async def schema(db: Database) -> AsyncIterator[str]:
    """A schema of its own with the outbox table (as journey's migration creates it)."""
    name = f"outbox_test_{uuid.uuid4().hex[:8]}"
    async with db.session() as session:
        await session.execute(text(f"CREATE SCHEMA {name}"))
        await session.execute(
            text(
                f"CREATE TABLE {name}.outbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " tenant_id text NOT NULL, lane smallint NOT NULL, topic text NOT NULL,"
                " key bytea, value bytea NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        )
    yield name
    async with db.session() as session:
        await session.execute(text(f"DROP SCHEMA {name} CASCADE"))


def relay(
    schema: str,
    db: Database,
    producer: AIOKafkaProducer,
    settings: CommonSettings,
    **options: float,
) -> outbox.OutboxRelay:
    return outbox.OutboxRelay(
        service="test",
        schema=schema,
        db=db,
        producer=producer,
        dsn=settings.dsn,
        notify_channel=f"{schema}_outbox",
        **options,  # type: ignore[arg-type]
    )


async def pending(db: Database, schema: str) -> int:
    async with db.session() as session:
        return int(await session.scalar(text(f"SELECT count(*) FROM {schema}.outbox")) or 0)


async def read_topic(settings: CommonSettings, topic: str, count: int) -> list[tuple[str, str]]:
    """The first ``count`` (key, value) pairs of ``topic``, in each partition's order."""
    consumer = make_consumer(settings, group_id=f"read-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    out: list[tuple[str, str]] = []
    try:
        consumer.subscribe([topic])
        async with asyncio.timeout(60):
            while len(out) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    out += [(r.key.decode(), r.value.decode()) for r in records if r.key]
    finally:
        await consumer.stop()
    return out


async def test_only_committed_messages_go_out_in_order_per_key_with_two_relays(
    schema: str, db: Database, producer: AIOKafkaProducer, settings: CommonSettings
):
    topic = f"test-outbox-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=4)
    keys = [f"t|customer-{i}" for i in range(12)]
    for seq in range(40):  # one transaction per step: every key gets its next message
        async with db.session() as session:
            conn = await raw_connection(session)
            await outbox.enqueue(
                conn,
                schema,
                [outbox.Message("t", topic, k.encode(), f"{seq}".encode()) for k in keys],
                lanes=8,
            )
    async with db.session() as session:  # rolled back: never published
        conn = await raw_connection(session)
        await outbox.enqueue(conn, schema, [outbox.Message("t", topic, b"t|ghost", b"0")])
        await session.rollback()
    assert await pending(db, schema) == 40 * len(keys)

    # Two relays at once, small rounds: they share lanes but never one lane at a time.
    relays = [relay(schema, db, producer, settings, batch_size=7, lanes=8) for _ in range(2)]
    sent = await asyncio.gather(*(r.drain() for r in relays))
    assert sum(sent) == 40 * len(keys)
    assert await pending(db, schema) == 0
    assert await relays[0].backlog() == (0, 0.0)

    per_key: dict[str, list[int]] = defaultdict(list)
    for key, value in await read_topic(settings, topic, 40 * len(keys)):
        per_key[key].append(int(value))
    assert sorted(per_key) == sorted(keys)  # the rolled-back message never went out
    for key in keys:
        assert per_key[key] == list(range(40)), key


async def test_messages_wait_while_the_broker_is_down_and_go_out_after(
    schema: str, db: Database, producer: AIOKafkaProducer, settings: CommonSettings
):
    topic = f"test-outbox-down-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=4)
    async with db.session() as session:
        conn = await raw_connection(session)
        await outbox.enqueue(
            conn, schema, [outbox.Message("t", topic, f"t|{i}".encode(), b"x") for i in range(5)]
        )

    logs = Path(tempfile.mkdtemp(prefix="waypoint-outbox-broker-"))
    broker = start_broker(log_path=logs / "broker.log")  # this test's own, to stop
    own = make_producer(settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap}))
    try:
        await own.start()
        broker.stop()
        down = relay(schema, db, own, settings, publish_timeout_seconds=2.0)
        with pytest.raises(TimeoutError):
            await down.publish_pending()
        count, age = await down.backlog()  # still there, and the gauges say so
        assert count == 5
        assert age > 0
    finally:
        await own.stop()
        broker.stop()
        shutil.rmtree(logs, ignore_errors=True)

    # The broker is back (here: the session's): the relay's run loop publishes everything.
    up = relay(schema, db, producer, settings, poll_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(up.run(stop))
    try:
        received = await read_topic(settings, topic, 5)
    finally:
        stop.set()
        await task
        await up.close()
    assert sorted(k for k, _ in received) == [f"t|{i}" for i in range(5)]
    assert await pending(db, schema) == 0


def test_the_relay_partitions_keys_as_the_kafka_client_does():
    """The relay builds one batch per partition itself: a key must land where
    ``producer.send`` (aiokafka's default partitioner, the Java client's) would put it."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for partitions in (1, 4, 7, 64):
        every = list(range(partitions))
        for i in range(300):
            key = f"tenant-{i % 5}|{uuid.UUID(int=i * 7919)}".encode()
            assert outbox.partition_of(key, partitions) == partitioner(key, every, every)
