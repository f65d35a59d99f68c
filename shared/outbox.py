"""A transactional outbox: messages written in the same transaction as their effects, published
after commit by a relay, never lost and never reordered for one key.

Writers call ``enqueue`` (one ``COPY`` for a whole chunk) inside their transaction. The table
(``<schema>.outbox``, one per service schema, see journey's 2026_11_30 migration) only ever
receives inserts, so writers never wait for a relay or for the broker.

The relay (``OutboxRelay.run``, a task of the worker process; any number may run) publishes in
rounds. A round is one transaction that
1. takes the lanes it can (``pg_try_advisory_xact_lock``; a lane is a hash of the message key,
   so all of one customer's messages share one), so two relays never publish one key's messages
   side by side;
2. claims the oldest rows of those lanes in id order (``FOR UPDATE SKIP LOCKED``, as alerts'
   notifier claims its rows);
3. sends them, awaits the broker's acknowledgement, deletes them, and commits.

- Nothing goes out before its transaction commits: the relay only sees committed rows.
- Nothing is lost: until the broker acknowledges, the rows stay (the round rolls back; counted
  in ``waypoint_outbox_publish_failures_total``, visible in ``waypoint_outbox_backlog`` and
  ``waypoint_outbox_oldest_seconds``). A relay that dies mid-round drops its connection, the
  locks go with it and the next round publishes the rows again: at least once, and consumers
  are idempotent (on event id, or keep the newest version).
- One key's messages keep their order: a writer inserts them while holding that key's row locks
  (the customer's context), so their ids follow commit order, and a lane is published by one
  relay at a time, in id order. ``lanes`` must stay the same while rows are pending.

The relay wakes on NOTIFY (``notify_channel``; writers in other processes, like the API, call
``notify``), on ``wake()`` from a writer in the same process, or every ``poll_seconds``.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge, Histogram

from shared.db import Database, asyncpg_dsn, raw_connection
from shared.faults import crash_point
from shared.logging import get_logger

log = get_logger("outbox")

PUBLISHED = Counter(
    "waypoint_outbox_published_total",
    "Outbox messages the broker acknowledged (then deleted from the outbox).",
    ["service"],
)
PUBLISH_FAILURES = Counter(
    "waypoint_outbox_publish_failures_total",
    "Relay rounds that failed (broker or database unavailable); their messages stay pending.",
    ["service"],
)
BACKLOG = Gauge(
    "waypoint_outbox_backlog",
    "Messages committed to the outbox and not yet acknowledged by the broker.",
    ["service"],
)
OLDEST = Gauge(
    "waypoint_outbox_oldest_seconds",
    "Age of the oldest message waiting in the outbox (0 when empty).",
    ["service"],
)
DELAY = Histogram(
    "waypoint_outbox_delay_seconds",
    "From a message's commit to the outbox to the broker's acknowledgement.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

DEFAULT_LANES = 64
STATS_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class Message:
    tenant_id: str
    topic: str
    key: bytes | None
    value: bytes


def lane_of(key: bytes | None, lanes: int = DEFAULT_LANES) -> int:
    """The lane of a key: stable across processes (crc32, not Python's salted ``hash``)."""
    return zlib.crc32(key or b"") % lanes


def lock_namespace(schema: str) -> int:
    """First key of the two-key advisory locks of a schema's lanes (a signed int4)."""
    value = zlib.crc32(f"{schema}.outbox".encode())
    return value - 2**32 if value >= 2**31 else value


async def enqueue(
    conn: asyncpg.Connection,
    schema: str,
    messages: Sequence[Message],
    *,
    lanes: int = DEFAULT_LANES,
) -> int:
    """Write ``messages`` to ``<schema>.outbox`` in the caller's transaction (one COPY)."""
    if not messages:
        return 0
    await conn.copy_records_to_table(
        "outbox",
        schema_name=schema,
        columns=("tenant_id", "lane", "topic", "key", "value"),
        records=[(m.tenant_id, lane_of(m.key, lanes), m.topic, m.key, m.value) for m in messages],
    )
    return len(messages)


async def notify(conn: asyncpg.Connection, channel: str) -> None:
    """Wake the relays listening on ``channel`` when the caller's transaction commits."""
    await conn.execute("SELECT pg_notify($1, '')", channel)


class OutboxRelay:
    def __init__(
        self,
        *,
        service: str,
        schema: str,
        db: Database,
        producer: AIOKafkaProducer,
        dsn: str,
        notify_channel: str,
        lanes: int = DEFAULT_LANES,
        batch_size: int = 1000,
        publish_timeout_seconds: float = 10.0,
        poll_seconds: float = 0.5,
    ):
        self.service = service
        self.schema = schema
        self.db = db
        self.producer = producer
        self.dsn = dsn
        self.notify_channel = notify_channel
        self.lanes = lanes
        self.batch_size = batch_size
        self.publish_timeout_seconds = publish_timeout_seconds
        self.poll_seconds = poll_seconds
        self.wakeup = asyncio.Event()
        self.listener: asyncpg.Connection | None = None
        self.stats_due = 0.0
        self._claim = f"""
WITH mine AS (
    SELECT lane FROM generate_series(0, $2::int - 1) AS lane
    WHERE pg_try_advisory_xact_lock($3::int, lane)
)
SELECT o.id, o.topic, o.key, o.value,
       extract(epoch FROM clock_timestamp() - o.created_at)::float8 AS age_s
FROM {schema}.outbox o
WHERE o.lane IN (SELECT lane FROM mine)
ORDER BY o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""
        self._delete = f"DELETE FROM {schema}.outbox WHERE id = ANY($1::bigint[])"
        self._stats = (
            "SELECT count(*) AS n, "
            "coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS age "
            f"FROM {schema}.outbox"
        )

    def wake(self) -> None:
        """A writer of this process committed messages: publish them now."""
        self.wakeup.set()

    async def publish_pending(self) -> int:
        """One round: claim up to ``batch_size`` messages, publish, delete; how many went out.
        Raises (and leaves them pending) if the broker does not acknowledge in time."""
        async with self.db.session() as session:
            conn = await raw_connection(session)
            rows = await conn.fetch(
                self._claim, self.batch_size, self.lanes, lock_namespace(self.schema)
            )
            if not rows:
                return 0
            started = time.perf_counter()
            await asyncio.wait_for(self._send(rows), self.publish_timeout_seconds)
            crash_point(f"{self.service}-outbox", "after_publish")  # published, not deleted
            await conn.execute(self._delete, [r["id"] for r in rows])
        waited = time.perf_counter() - started
        PUBLISHED.labels(self.service).inc(len(rows))
        delay = DELAY.labels(self.service)
        for r in rows:
            delay.observe(float(r["age_s"]) + waited)
        return len(rows)

    async def _send(self, rows: list[asyncpg.Record]) -> None:
        futures = [await self.producer.send(r["topic"], r["value"], key=r["key"]) for r in rows]
        await asyncio.gather(*futures)

    async def drain(self) -> int:
        """Publish until nothing is pending (a round that claims less than a batch is the last)."""
        total = 0
        while True:
            count = await self.publish_pending()
            total += count
            if count < self.batch_size:
                return total

    async def backlog(self) -> tuple[int, float]:
        """(messages pending, age of the oldest in seconds), also set as gauges."""
        async with self.db.session() as session:
            conn = await raw_connection(session)
            row = await conn.fetchrow(self._stats)
        pending, age = (int(row["n"]), float(row["age"])) if row else (0, 0.0)
        BACKLOG.labels(self.service).set(pending)
        OLDEST.labels(self.service).set(age)
        return pending, age

    async def _listen(self) -> None:
        if self.listener is not None and not self.listener.is_closed():
            return
        try:
            self.listener = await asyncpg.connect(asyncpg_dsn(self.dsn))
            await self.listener.add_listener(self.notify_channel, lambda *_: self.wakeup.set())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("outbox.listen_failed", service=self.service, error=str(exc))
            self.listener = None

    async def run(self, stop: asyncio.Event) -> None:
        """Publish whenever woken (or every ``poll_seconds``) until ``stop``; then a last drain."""
        failures = 0
        while not stop.is_set():
            await self._listen()
            self.wakeup.clear()
            wait = self.poll_seconds
            try:
                await self.drain()
                if time.monotonic() >= self.stats_due:  # a count, not on every round
                    self.stats_due = time.monotonic() + STATS_EVERY_SECONDS
                    await self.backlog()
                failures = 0
            except Exception:  # noqa: BLE001 - counted, logged and retried: never dropped
                failures += 1
                PUBLISH_FAILURES.labels(self.service).inc()
                log.exception(
                    "outbox.publish_failed", service=self.service, consecutive_failures=failures
                )
                wait = min(self.poll_seconds * 2**failures, 30.0) * random.uniform(0.8, 1.2)  # noqa: S311
            waker = asyncio.create_task(self.wakeup.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([waker, stopper], timeout=wait, return_when="FIRST_COMPLETED")
            waker.cancel()
            stopper.cancel()
        try:  # what the last batches committed goes out now rather than at the next start
            await asyncio.wait_for(self.drain(), self.publish_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - pending rows stay for the next relay
            log.warning("outbox.final_drain_failed", service=self.service, error=str(exc))

    async def close(self) -> None:
        if self.listener is not None and not self.listener.is_closed():
            await self.listener.close()
