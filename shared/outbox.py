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
``notify``), on ``wake()`` from a writer in the same process, or every ``poll_seconds``
(``shared/listen_loop.py``, which alerts' notifier runs on too).

Where the messages wait is the relay's ``store``: by default the append-only table above
(``LaneOutbox``). Another store claims and settles its own way behind the same relay: alerts'
engagement changes (``services/alerts/engagement.py``), one row per customer, coalesced and
leased, with metrics of their own (``RelayMetrics``).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from prometheus_client import Counter, Gauge, Histogram

from shared.db import Database, raw_connection
from shared.faults import crash_point
from shared.listen_loop import Backoff, ListenLoop
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


class Message(NamedTuple):  # not a frozen dataclass: one per event on the journey worker's path
    tenant_id: str
    topic: str
    key: bytes | None
    value: bytes


def lane_of(key: bytes | None, lanes: int = DEFAULT_LANES) -> int:
    """The lane of a key: stable across processes (crc32, not Python's salted ``hash``)."""
    return zlib.crc32(key or b"") % lanes


@lru_cache(maxsize=8_192)  # ~210 bytes an entry (100,000 held 21 MB); a miss is one murmur2
def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed message (the Java client's and aiokafka's)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def lock_namespace(schema: str, table: str = "outbox") -> int:
    """First key of the two-key advisory locks of a schema's lanes (a signed int4)."""
    value = zlib.crc32(f"{schema}.{table}".encode())
    return value - 2**32 if value >= 2**31 else value


async def enqueue(
    conn: asyncpg.Connection,
    schema: str,
    messages: Sequence[Message],
    *,
    lanes: int = DEFAULT_LANES,
    table: str = "outbox",
) -> int:
    """Write ``messages`` to ``<schema>.<table>`` in the caller's transaction (one COPY)."""
    if not messages:
        return 0
    await conn.copy_records_to_table(
        table,
        schema_name=schema,
        columns=("tenant_id", "lane", "topic", "key", "value"),
        records=[(m.tenant_id, lane_of(m.key, lanes), m.topic, m.key, m.value) for m in messages],
    )
    return len(messages)


async def notify(conn: asyncpg.Connection, channel: str) -> None:
    """Wake the relays listening on ``channel`` when the caller's transaction commits."""
    await conn.execute("SELECT pg_notify($1, '')", channel)


class Outgoing(NamedTuple):
    """A claimed message, to send: its age (since its commit) as the claim saw it."""

    topic: str
    key: bytes | None
    value: bytes
    age_seconds: float


Send = Callable[[Sequence[Outgoing]], Awaitable[None]]


class PendingStore(Protocol):
    """Where a relay's messages wait, and how one round claims, sends and settles them."""

    async def publish_round(self, db: Database, limit: int, send: Send) -> Sequence[Outgoing]:
        """Claim up to ``limit`` messages, ``await send(them)`` (it raises if the broker does
        not acknowledge: they must stay pending), settle them; what was sent."""
        ...

    async def backlog(self, db: Database) -> tuple[int, float]:
        """(messages pending, age of the oldest in seconds; 0 when none)."""
        ...


class LaneOutbox:
    """The append-only ``<schema>.<table>`` of ``enqueue``: a round holds its lanes' advisory
    locks and the claimed rows while it sends, deletes them and commits."""

    def __init__(self, schema: str, *, table: str = "outbox", lanes: int = DEFAULT_LANES):
        self.lanes = lanes
        self.namespace = lock_namespace(schema, table)
        self._claim = f"""
WITH mine AS (
    SELECT lane FROM generate_series(0, $2::int - 1) AS lane
    WHERE pg_try_advisory_xact_lock($3::int, lane)
)
SELECT o.id, o.topic, o.key, o.value,
       extract(epoch FROM clock_timestamp() - o.created_at)::float8 AS age_s
FROM {schema}.{table} o
WHERE o.lane IN (SELECT lane FROM mine)
ORDER BY o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""
        self._delete = f"DELETE FROM {schema}.{table} WHERE id = ANY($1::bigint[])"
        self._stats = (
            "SELECT count(*) AS n, "
            "coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS age "
            f"FROM {schema}.{table}"
        )

    async def publish_round(self, db: Database, limit: int, send: Send) -> Sequence[Outgoing]:
        async with db.session() as session:
            conn = await raw_connection(session)
            rows = await conn.fetch(self._claim, limit, self.lanes, self.namespace)
            if not rows:
                return []
            # (id, topic, key, value, age_s): read by position, one message per row
            messages = [Outgoing(r[1], r[2], r[3], float(r[4])) for r in rows]
            await send(messages)
            await conn.execute(self._delete, [r[0] for r in rows])
        return messages

    async def backlog(self, db: Database) -> tuple[int, float]:
        async with db.session() as session:
            conn = await raw_connection(session)
            row = await conn.fetchrow(self._stats)
        return (int(row["n"]), float(row["age"])) if row else (0, 0.0)


@dataclass(frozen=True)
class RelayMetrics:
    published: Counter
    failures: Counter
    backlog: Gauge
    delay: Histogram
    oldest: Gauge | None = None

    @classmethod
    def of_service(cls, service: str) -> RelayMetrics:
        """The ``waypoint_outbox_*`` metrics, labelled with the service."""
        return cls(
            published=PUBLISHED.labels(service),
            failures=PUBLISH_FAILURES.labels(service),
            backlog=BACKLOG.labels(service),
            delay=DELAY.labels(service),
            oldest=OLDEST.labels(service),
        )


class OutboxRelay(ListenLoop):
    def __init__(
        self,
        *,
        service: str,
        db: Database,
        producer: AIOKafkaProducer,
        dsn: str,
        notify_channel: str,
        schema: str | None = None,
        lanes: int = DEFAULT_LANES,
        store: PendingStore | None = None,
        batch_size: int = 1000,
        publish_timeout_seconds: float = 10.0,
        poll_seconds: float = 0.5,
        metrics: RelayMetrics | None = None,
        retry: Backoff | None = None,
        drain_on_stop: bool = True,
        event_prefix: str = "outbox",
        log_fields: Mapping[str, str] | None = None,
    ):
        """Relays ``store`` (default: ``LaneOutbox(schema, lanes=lanes)``). After a failed
        round it waits ``retry`` (default: 2·poll, doubling up to 30 s, ± 20 %); on stop it
        drains once more if ``drain_on_stop``. Log events: ``<event_prefix>.publish_failed`` …,
        with ``log_fields`` (default: the service)."""
        super().__init__(
            dsn=dsn,
            channel=notify_channel,
            poll_seconds=poll_seconds,
            retry=retry or Backoff(base=2 * poll_seconds, cap=30.0),
            log=log,
            event_prefix=event_prefix,
            log_fields={"service": service} if log_fields is None else log_fields,
        )
        if store is None:
            if schema is None:
                raise ValueError("an outbox relay needs a schema (its outbox table) or a store")
            store = LaneOutbox(schema, lanes=lanes)
        self.service = service
        self.store = store
        self.db = db
        self.producer = producer
        self.batch_size = batch_size
        self.publish_timeout_seconds = publish_timeout_seconds
        self.metrics = metrics or RelayMetrics.of_service(service)
        self.drain_on_stop = drain_on_stop
        self.stats_due = 0.0

    async def publish_pending(self) -> int:
        """One round: claim up to ``batch_size`` messages, publish, settle; how many went out.
        Raises (and leaves them pending) if the broker does not acknowledge in time."""
        started = time.perf_counter()  # reset when the claimed messages are sent

        async def send(messages: Sequence[Outgoing]) -> None:
            nonlocal started
            started = time.perf_counter()
            await asyncio.wait_for(self._send(messages), self.publish_timeout_seconds)
            crash_point(f"{self.service}-outbox", "after_publish")  # published, not settled

        sent = await self.store.publish_round(self.db, self.batch_size, send)
        if not sent:
            return 0
        waited = time.perf_counter() - started
        self.metrics.published.inc(len(sent))
        for m in sent:
            self.metrics.delay.observe(m.age_seconds + waited)
        return len(sent)

    async def _send(self, messages: Sequence[Outgoing]) -> None:
        """One record batch per (topic, partition), in id order within each: Kafka's default
        partitioning (murmur2 of the key, as ``producer.send`` would pick), without its
        per-message future, partitioner call and callback (profiled: most of the relay's CPU).
        The relay publishes one round at a time, so its batches never queue behind each other."""
        by_partition: dict[tuple[str, int], list[Outgoing]] = {}
        futures: list[asyncio.Future[object]] = []
        counts: dict[str, int] = {}
        for m in messages:
            if m.key is None:  # no key: no partition to keep; the client spreads them
                futures.append(await self.producer.send(m.topic, m.value))
                continue
            count = counts.get(m.topic)
            if count is None:
                count = counts[m.topic] = len(await self.producer.partitions_for(m.topic))
            by_partition.setdefault((m.topic, partition_of(m.key, count)), []).append(m)
        for (topic, partition), members in by_partition.items():
            batch = self.producer.create_batch()
            for m in members:
                if batch.append(key=m.key, value=m.value, timestamp=None) is None:
                    futures.append(await self._send_batch(batch, topic, partition))  # full
                    batch = self.producer.create_batch()
                    batch.append(key=m.key, value=m.value, timestamp=None)  # takes any
            futures.append(await self._send_batch(batch, topic, partition))
        await asyncio.gather(*futures)

    async def _send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[object]:
        batch.close()
        future: asyncio.Future[object] = await self.producer.send_batch(
            batch, topic, partition=partition
        )
        return future

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
        pending, age = await self.store.backlog(self.db)
        self.metrics.backlog.set(pending)
        if self.metrics.oldest is not None:
            self.metrics.oldest.set(age)
        return pending, age

    async def work_once(self) -> float:
        await self.drain()
        if time.monotonic() >= self.stats_due:  # a count, not on every round
            self.stats_due = time.monotonic() + STATS_EVERY_SECONDS
            await self.backlog()
        return self.poll_seconds

    def failed(self, failures: int) -> None:
        # counted, logged and retried: never dropped
        self.metrics.failures.inc()
        self.log.exception(
            f"{self.event_prefix}.publish_failed",
            consecutive_failures=failures,
            **self.log_fields,
        )

    async def stopped(self) -> None:
        if not self.drain_on_stop:
            return
        try:  # what the last batches committed goes out now rather than at the next start
            await asyncio.wait_for(self.drain(), self.publish_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - pending rows stay for the next relay
            self.log.warning(
                f"{self.event_prefix}.final_drain_failed", error=str(exc), **self.log_fields
            )
