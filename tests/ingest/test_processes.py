"""The worker as a real process: SIGKILLed mid-stream, and two of them in one consumer group."""

import ast
import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.config import IngestSettings
from shared.db import Database
from tests.ingest.conftest import produce, read_topic
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


async def counts(db: Database, tenant: str) -> tuple[int, int]:
    async with db.session() as session:
        row = (
            await session.execute(
                text(
                    "SELECT count(*) AS n, count(DISTINCT event_id) AS d "
                    "FROM ingest.event WHERE tenant_id = :t"
                ),
                {"t": tenant},
            )
        ).one()
    return row.n, row.d


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
            return (await counts(db, tenant.id))[0] >= 300

        await eventually(some_stored, timeout=60, interval=0.02)
        worker.kill()  # SIGKILL: no cleanup, offsets of the batch in flight never committed
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
    stored_at_kill = (await counts(db, tenant.id))[0]
    assert stored_at_kill < len(first), "the kill should land mid-stream"
    later = [cloud_event(tenant=tenant.id) for _ in range(1000)]
    await produce(producer, ingest_settings.topic_raw, [orjson.dumps(e) for e in later])

    restarted = start_worker(ingest_settings, tmp_path / "worker.log", batch_size=1000)
    try:
        total = len(first) + len(later)

        async def all_stored() -> bool:
            return (await counts(db, tenant.id))[0] >= total

        await eventually(all_stored, timeout=90, interval=0.2)
        await asyncio.sleep(1)  # anything stored twice would show up now
        assert await counts(db, tenant.id) == (total, total)
        wanted = {e["id"] for e in first + later}

        def ids_of(records: list) -> set[str]:
            return {orjson.loads(r.value)["id"] for r in records}

        published = await read_topic(
            ingest_settings,
            ingest_settings.topic_normalized,
            until=lambda records: len(records) >= total and ids_of(records) >= wanted,
            timeout=60,
        )
        assert ids_of(published) == wanted  # every event published at least once
    finally:
        assert stop(restarted) == 0, (tmp_path / "worker.log").read_text()[-3000:]


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
            return (await counts(db, tenant.id))[0] >= len(events)

        await eventually(all_stored, timeout=90, interval=0.2)
        await asyncio.sleep(1)
        assert await counts(db, tenant.id) == (len(events), len(events))

        async def both_joined() -> bool:
            return all("partitions.assigned" in log.read_text() for log in logs)

        await eventually(both_joined, timeout=30)
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0]
    last = [
        re.findall(r"partitions\.assigned\s+partitions=(\[.*?\])", log.read_text()) for log in logs
    ]
    final = [set(ast.literal_eval(found[-1])) for found in last]
    assert all(final), f"each worker ends up owning partitions: {final}"
    assert not final[0] & final[1]
    topic = ingest_settings.topic_raw
    assert final[0] | final[1] == {f"{topic}:0", f"{topic}:1"}
