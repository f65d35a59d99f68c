"""An infrastructure failure is retried, never dead-lettered, and visible while it lasts.

The worker reaches PostgreSQL through a real TCP port that refuses connections until the test
opens it: the database is down, then comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from services.ingest.config import IngestSettings
from services.ingest.worker import run
from shared.db import Database
from shared.embedded import free_port
from tests.ingest.conftest import produce, read_topic, stored_ids
from tests.support import TenantFactory, cloud_event, eventually, sample
from tests.topics import records_in


class DatabaseGate:
    """A local TCP port in front of PostgreSQL: connections are refused until ``open()``."""

    def __init__(self, dsn: str):
        parts = urlsplit(dsn)
        query = dict(parse_qsl(parts.query))
        socket_dir = query.pop("host", None)
        port = parts.port or 5432
        if socket_dir and socket_dir.startswith("/"):
            self.upstream: dict[str, Any] = {"path": f"{socket_dir}/.s.PGSQL.{port}"}
        else:
            self.upstream = {"host": parts.hostname or "127.0.0.1", "port": port}
        self.port = free_port()
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        self.dsn = urlunsplit(
            (parts.scheme, f"{netloc}127.0.0.1:{self.port}", parts.path, urlencode(query), "")
        )
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for pipe in self.pipes:
            pipe.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if "path" in self.upstream:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream["path"])
        else:
            up_reader, up_writer = await asyncio.open_connection(**self.upstream)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        task = asyncio.ensure_future(
            asyncio.gather(copy(reader, up_writer), copy(up_reader, writer), return_exceptions=True)
        )
        self.pipes.add(task)
        task.add_done_callback(self.pipes.discard)


async def test_database_down_is_retried_visibly_and_nothing_is_dead_lettered(
    db: Database,
    make_tenant: TenantFactory,
    producer: AIOKafkaProducer,
    ingest_settings: IngestSettings,
):
    tenant = await make_tenant()
    gate = DatabaseGate(ingest_settings.dsn)
    settings = ingest_settings.model_copy(update={"database_url": gate.dsn})
    events = [cloud_event(tenant=tenant.id) for _ in range(3)]
    await produce(producer, settings.topic_raw, [orjson.dumps(e) for e in events], key=b"k")
    failures_before = sample("waypoint_consumer_batch_failures_total", service="ingest")
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop=stop))
    try:

        async def stuck() -> bool:
            return (
                sample("waypoint_consumer_consecutive_failures", service="ingest") >= 2
                and sample("waypoint_consumer_lag", service="ingest", topic=settings.topic_raw) == 3
            )

        await eventually(stuck, timeout=60)
        assert sample("waypoint_consumer_batch_failures_total", service="ingest") >= (
            failures_before + 2
        )
        assert sample("waypoint_consumer_stalled_seconds", service="ingest") > 0
        assert await stored_ids(db, tenant.id) == []

        await gate.open()  # the database is back

        async def caught_up() -> bool:
            return (
                len(await stored_ids(db, tenant.id)) == 3
                and sample("waypoint_consumer_lag", service="ingest", topic=settings.topic_raw) == 0
            )

        await eventually(caught_up, timeout=60)
        assert sample("waypoint_consumer_consecutive_failures", service="ingest") == 0
        assert sample("waypoint_consumer_stalled_seconds", service="ingest") == 0
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        await gate.close()

    assert sorted(await stored_ids(db, tenant.id)) == sorted(e["id"] for e in events)
    published = await read_topic(settings, settings.topic_normalized, expect=3)
    assert {orjson.loads(r.value)["id"] for r in published} == {e["id"] for e in events}
    # Nothing was dead-lettered: the dead-letter topic holds nothing, the table nothing.
    assert await records_in(settings, producer, settings.topic_dead_letter) == 0
    async with db.session() as session:
        logged = await session.scalar(
            text("SELECT count(*) FROM ingest.dead_letter WHERE tenant_id = :t"), {"t": tenant.id}
        )
    assert logged == 0
