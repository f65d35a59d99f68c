"""The worker as a real process: SIGKILLed mid-stream, and two of them in one consumer group."""

import ast
import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import text

from services.ingest.config import IngestSettings
from shared.db import Database
from shared.kafka import make_consumer
from tests.ingest.conftest import produce
from tests.support import TenantFactory, cloud_event, eventually

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def start_worker(settings: IngestSettings, log: Path, batch_size: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": settings.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYPOINT_ENV": "test",
        "WAYPOINT_LOG_JSON": "false",
        "WAYPOINT_TOPIC_RAW": settings.topic_raw,
        "WAYPOINT_TOPIC_NORMALIZED": settings.topic_normalized,
        "WAYPOINT_TOPIC_DEAD_LETTER": settings.topic_dead_letter,
        "WAYPOINT_INGEST_CONSUMER_GROUP": settings.consumer_group,
        "WAYPOINT_INGEST_SESSION_TIMEOUT_MS": "6000",
        "WAYPOINT_INGEST_BATCH_SIZE": str(batch_size),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "ingest"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def stored(db: Database, tenant: str) -> int:
    async with db.session() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM ingest.event WHERE tenant_id = :t"), {"t": tenant}
        )
    return int(count or 0)


async def published(
    settings: IngestSettings, producer: AIOKafkaProducer, tenant: str
) -> dict[str, list[bytes]]:
    """Every copy of each of ``tenant``'s events on the normalized topic, by event id.

    Call it once the workers have exited. A sentinel produced now to each partition is the
    barrier: partitions are read in order, so by its sentinel everything before has been seen.
    (Not end offsets: the embedded broker answers "latest" with the last record *batch*'s base
    offset + 1, short of the end when that batch holds several records.)"""
    topic = settings.topic_normalized
    tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
    sentinel = orjson.dumps({"sentinel": uuid.uuid4().hex})
    for tp in tps:
        await producer.send_and_wait(topic, sentinel, partition=tp.partition)
    consumer = make_consumer(settings, group_id=f"reader-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    copies: dict[str, list[bytes]] = {}
    ended: set[TopicPartition] = set()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def read_to_the_sentinels() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    if record.value == sentinel:
                        ended.add(tp)
                        continue
                    event = orjson.loads(record.value)
                    if event.get("tenant") == tenant:
                        copies.setdefault(event["id"], []).append(record.value)
            return ended == set(tps)

        await eventually(read_to_the_sentinels, timeout=60, interval=0)
    finally:
        await consumer.stop()
    return copies


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


async def test_sigkilled_worker_stores_every_event_exactly_once_after_restart(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    tmp_path: Path,
):
    tenant = await make_tenant()
    first = [cloud_event(tenant=tenant.id) for _ in range(4000)]
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(e) for e in first])
    worker = start_worker(ingest_settings, tmp_path / "worker.log", batch_size=100)
    try:

        async def some_stored() -> bool:
            return await stored(db, tenant.id) >= 300

        await eventually(some_stored, timeout=60, interval=0.02)
        worker.kill()  # SIGKILL: no cleanup, offsets of the batch in flight never committed
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
    stored_at_kill = await stored(db, tenant.id)
    assert stored_at_kill < len(first), "the kill should land mid-stream"
    later = [cloud_event(tenant=tenant.id) for _ in range(1000)]
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(e) for e in later])

    restarted = start_worker(ingest_settings, tmp_path / "worker.log", batch_size=1000)
    try:
        total = len(first) + len(later)

        async def all_stored() -> bool:
            return await stored(db, tenant.id) >= total

        await eventually(all_stored, timeout=90, interval=0.2)
    finally:
        # SIGTERM: the batch in flight finishes (published, committed), then nothing more.
        assert stop(restarted) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert await stored(db, tenant.id) == total

    copies = await published(ingest_settings, producer, tenant.id)
    assert copies.keys() == {e["id"] for e in first + later}  # every event published
    # Publishing is at least once: only the batch in flight at the kill (at most 100 events,
    # all from before it) may be published again, and then as the very same message.
    repeated = {event_id for event_id, values in copies.items() if len(values) > 1}
    assert len(repeated) <= 100, f"{len(repeated)} events published more than once"
    assert repeated <= {e["id"] for e in first}
    assert all(len(copies[i]) == 2 and len(set(copies[i])) == 1 for i in repeated)


async def test_two_workers_in_one_group_share_the_partitions(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
    tmp_path: Path,
):
    tenant = await make_tenant()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(ingest_settings, log, batch_size=500) for log in logs]
    try:
        events = [cloud_event(tenant=tenant.id) for _ in range(3000)]
        for i in range(0, len(events), 500):  # keys spread the events over both partitions
            chunk = events[i : i + 500]
            pending = [
                await producer.send(
                    ingest_settings.topic_raw, orjson.dumps(e), key=e["id"].encode()
                )
                for e in chunk
            ]
            await asyncio.gather(*pending)

        async def all_stored() -> bool:
            return await stored(db, tenant.id) >= len(events)

        await eventually(all_stored, timeout=90, interval=0.2)

        async def both_joined() -> bool:
            return all("partitions.assigned" in log.read_text() for log in logs)

        await eventually(both_joined, timeout=30)
    finally:
        codes = [stop(w) for w in workers]  # each finishes its batch in flight, then exits
    assert codes == [0, 0]
    assert await stored(db, tenant.id) == len(events)
    texts = [log.read_text() for log in logs]
    last = [re.findall(r"partitions\.assigned\s+partitions=(\[.*?\])", t) for t in texts]
    final = [set(ast.literal_eval(found[-1])) for found in last]
    assert all(final), f"each worker ends up owning partitions: {final}"
    assert not final[0] & final[1]
    topic = ingest_settings.topic_raw
    assert final[0] | final[1] == {f"{topic}:0", f"{topic}:1"}

    copies = await published(ingest_settings, producer, tenant.id)
    assert copies.keys() == {e["id"] for e in events}
    # No worker died, so an event is published twice only when a rebalance took its partition
    # away while its batch (at most 500 events) was in flight: at most one batch per revocation.
    revocations = sum(len(re.findall(r"partitions\.revoked\s+count=[1-9]", t)) for t in texts)
    repeated = [event_id for event_id, values in copies.items() if len(values) > 1]
    assert len(repeated) <= 500 * revocations, (len(repeated), revocations)
