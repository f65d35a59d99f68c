"""Engagement changes, published to journey (topic ``waypoint.customer.engagement``) after
their transaction commits, without losing one.

Whatever changes a customer's engagement — the worker scoring an activity, the decay scheduler,
an alert opened, extended, acknowledged or resolved — bumps the customer's row in
``alerts.engagement_change`` in that same transaction (``mark_changed``): a transactional outbox
with one row per customer. The relay (a task of the alerts worker process; any number may run)
claims rows whose version is ahead of the published one — a short transaction that takes a
lease on them (``FOR UPDATE SKIP LOCKED``, so relays share the work) and reads the customers'
current engagement — publishes one message per customer, awaits the broker's acknowledgement,
then records the version it published. Writers never wait for the broker: a change committed
while its row is being published stays pending and goes out in the next round.

- Nothing is published before the change commits: the relay only sees committed rows.
- Nothing is lost: until the broker acknowledges, the row stays pending and is retried (counted
  in ``waypoint_alerts_engagement_publish_failures_total``, visible in
  ``waypoint_alerts_engagement_backlog``). A relay that dies mid-round leaves its lease to
  expire, and another (or the restarted one) publishes the rows again: at least once; consumers
  keep the highest version.
- Changes coalesce: a customer changed ten times before the relay runs is published once, with
  the latest state (each message is a whole snapshot, never a delta).

LISTEN wakes the relay when a change commits; polling every ``engagement_poll_seconds`` is the
fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from services.alerts.config import AlertsSettings
from services.alerts.metrics import (
    ENGAGEMENT_BACKLOG,
    ENGAGEMENT_DELAY,
    ENGAGEMENT_PUBLISH_FAILURES,
    ENGAGEMENT_PUBLISHED,
)
from services.alerts.state import load_models, loads
from services.alerts.tables import ENGAGEMENT_CHANNEL
from shared.db import Database, asyncpg_dsn, raw_connection
from shared.events.engagement import ChurnAlert, CustomerEngagementChanged
from shared.logging import get_logger

log = get_logger("alerts.engagement")
BACKLOG_EVERY_SECONDS = 5.0


def change_upsert(source: str) -> str:
    """``INSERT`` bumping the engagement version of the (tenant, customer) pairs ``source``
    yields. The version: the previous one + 1, and at least the change's time in µs (so
    versions keep growing even if this table is ever rebuilt); the row lock serialises writers
    of one customer."""
    return f"""
INSERT INTO alerts.engagement_change (tenant_id, customer_id, version, changed_at)
SELECT u.t, u.c, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, clock_timestamp()
FROM {source} AS u(t, c)
ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
    version = GREATEST(alerts.engagement_change.version + 1, EXCLUDED.version),
    changed_at = EXCLUDED.changed_at"""


_MARK = change_upsert("unnest($1::text[], $2::text[])")

# Lease the oldest pending rows (skipping those another relay holds or leased), and read the
# customers' engagement in the same statement.
_CLAIM = """
WITH due AS (
    SELECT tenant_id, customer_id FROM alerts.engagement_change
    WHERE version > published_version
      AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
    ORDER BY changed_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE alerts.engagement_change e
    SET claimed_until = clock_timestamp() + make_interval(secs => $2)
    FROM due WHERE e.tenant_id = due.tenant_id AND e.customer_id = due.customer_id
    RETURNING e.tenant_id, e.customer_id, e.version, e.changed_at, e.claimed_until
)
SELECT c.tenant_id, c.customer_id, c.version, c.changed_at, c.claimed_until,
       extract(epoch FROM clock_timestamp() - c.changed_at)::float8 AS age_s,
       s.score, s.scored_at, s.segment, s.merged_into, s.contributions::text AS contributions,
       a.id AS alert_id, a.status AS alert_status, a.rules::text AS alert_rules,
       a.score AS alert_score, a.threshold AS alert_threshold, a.opened_at AS alert_opened_at,
       a.acknowledged_at AS alert_acknowledged_at, a.owner AS alert_owner,
       a.explanation ->> 'summary' AS alert_summary
FROM claimed c
LEFT JOIN alerts.customer_state s ON s.tenant_id = c.tenant_id AND s.customer_id = c.customer_id
LEFT JOIN alerts.alert a ON a.id = s.open_alert_id AND a.status <> 'resolved'
ORDER BY c.tenant_id, c.customer_id
"""

# The version published (a writer may have bumped it meanwhile: then the row stays pending), and
# the lease given back, unless it expired and another relay holds the row now.
_SETTLE = """
UPDATE alerts.engagement_change e SET
    published_version = CASE WHEN $4 THEN GREATEST(e.published_version, u.v)
                             ELSE e.published_version END,
    published_at = CASE WHEN $4 THEN now() ELSE e.published_at END,
    claimed_until = CASE WHEN e.claimed_until = u.lease THEN NULL ELSE e.claimed_until END
FROM unnest($1::text[], $2::text[], $3::int8[], $5::timestamptz[]) AS u(t, c, v, lease)
WHERE e.tenant_id = u.t AND e.customer_id = u.c
"""


async def mark_changed(conn: asyncpg.Connection, keys: Iterable[tuple[str, str]]) -> int:
    """Record, in the caller's transaction, that these customers' engagement changed; a NOTIFY
    wakes the relays at commit. Returns how many customers were marked."""
    ordered = sorted(set(keys))  # one lock order for every writer
    if not ordered:
        return 0
    await conn.execute(_MARK, [t for t, _ in ordered], [c for _, c in ordered])
    await conn.execute("SELECT pg_notify($1, '')", ENGAGEMENT_CHANNEL)
    return len(ordered)


def message(row: asyncpg.Record, threshold: float | None) -> CustomerEngagementChanged:
    """The customer's current engagement, as one claimed row of ``_CLAIM`` holds it."""
    alert = None
    if row["alert_id"] is not None:
        alert = ChurnAlert(
            alert_id=str(row["alert_id"]),
            status=row["alert_status"],
            rules=loads(row["alert_rules"], []),
            score=row["alert_score"],
            threshold=row["alert_threshold"],
            opened_at=row["alert_opened_at"],
            acknowledged_at=row["alert_acknowledged_at"],
            owner=row["alert_owner"],
            summary=row["alert_summary"],
        )
    points: dict[str, Any] = loads(row["contributions"], {}).get("points") or {}
    return CustomerEngagementChanged(
        tenant=row["tenant_id"],
        customer_id=row["customer_id"],
        version=row["version"],
        changed_at=row["changed_at"],
        score=row["score"],
        scored_at=row["scored_at"],
        segment=row["segment"],
        threshold=threshold,
        contributions={k: float(v) for k, v in points.items() if v is not None},
        alert=alert,
        merged_into=row["merged_into"],
    )


class EngagementRelay:
    def __init__(self, settings: AlertsSettings, db: Database, producer: AIOKafkaProducer):
        self.settings = settings
        self.db = db
        self.producer = producer
        self.wake = asyncio.Event()
        self.listener: asyncpg.Connection | None = None
        self.backlog_due = 0.0

    async def publish_pending(self) -> int:
        """Claim up to ``engagement_batch_size`` pending changes, publish them, record them as
        published. Raises (and leaves them pending) if the broker does not acknowledge within
        ``engagement_publish_timeout_seconds``."""
        lease = self.settings.engagement_publish_timeout_seconds * 3
        async with self.db.session() as session:
            conn = await raw_connection(session)
            rows = await conn.fetch(_CLAIM, self.settings.engagement_batch_size, lease)
            if not rows:
                return 0
            models = await load_models(conn, sorted({r["tenant_id"] for r in rows}))
        claimed_at = time.perf_counter()
        messages = [
            message(
                r,
                models[r["tenant_id"]]
                .for_segment(r["segment"] or "default")
                .thresholds.alert_below,
            )
            for r in rows
        ]
        try:
            await asyncio.wait_for(
                self._send(messages), self.settings.engagement_publish_timeout_seconds
            )
        except BaseException:
            await asyncio.shield(self._settle(rows, published=False))  # retry soon, not at expiry
            raise
        await self._settle(rows, published=True)
        waited = time.perf_counter() - claimed_at
        ENGAGEMENT_PUBLISHED.inc(len(rows))
        for r in rows:
            ENGAGEMENT_DELAY.observe(float(r["age_s"]) + waited)
        return len(rows)

    async def _settle(self, rows: list[asyncpg.Record], *, published: bool) -> None:
        async with self.db.session() as session:
            conn = await raw_connection(session)
            await conn.execute(
                _SETTLE,
                [r["tenant_id"] for r in rows],
                [r["customer_id"] for r in rows],
                [r["version"] for r in rows],
                published,
                [r["claimed_until"] for r in rows],
            )

    async def _send(self, messages: list[CustomerEngagementChanged]) -> None:
        topic = self.settings.topic_engagement
        futures = [
            await self.producer.send(topic, m.to_json(), key=m.kafka_key()) for m in messages
        ]
        await asyncio.gather(*futures)

    async def drain(self) -> int:
        """Publish until nothing is pending (a round that claims less than a batch is the last)."""
        total = 0
        while True:
            count = await self.publish_pending()
            total += count
            if count < self.settings.engagement_batch_size:
                return total

    async def backlog(self) -> int:
        async with self.db.session() as session:
            conn = await raw_connection(session)
            pending: int = await conn.fetchval(
                "SELECT count(*) FROM alerts.engagement_change WHERE version > published_version"
            )
        ENGAGEMENT_BACKLOG.set(pending)
        return pending

    async def _listen(self) -> None:
        if self.listener is not None and not self.listener.is_closed():
            return
        try:
            self.listener = await asyncpg.connect(asyncpg_dsn(self.settings.dsn))
            await self.listener.add_listener(ENGAGEMENT_CHANNEL, lambda *_: self.wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("engagement.listen_failed", error=str(exc))
            self.listener = None

    async def run(self, stop: asyncio.Event) -> None:
        """Publish pending changes whenever woken (or every poll interval) until ``stop``."""
        failures = 0
        while not stop.is_set():
            await self._listen()
            self.wake.clear()
            wait = self.settings.engagement_poll_seconds
            try:
                await self.drain()
                if time.monotonic() >= self.backlog_due:  # a count, not on every round
                    self.backlog_due = time.monotonic() + BACKLOG_EVERY_SECONDS
                    await self.backlog()
                failures = 0
            except Exception:  # noqa: BLE001 - counted, logged and retried: never dropped
                failures += 1
                ENGAGEMENT_PUBLISH_FAILURES.inc()
                log.exception("engagement.publish_failed", consecutive_failures=failures)
                wait = min(wait * 2**failures, 60.0)
            waker = asyncio.create_task(self.wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([waker, stopper], timeout=wait, return_when="FIRST_COMPLETED")
            waker.cancel()
            stopper.cancel()

    async def close(self) -> None:
        if self.listener is not None and not self.listener.is_closed():
            await self.listener.close()
