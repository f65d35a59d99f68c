"""The notifier: delivers outbox rows to the tenants' channels.

Each delivery runs in its own transaction that holds the outbox row with ``FOR UPDATE SKIP
LOCKED`` (so any number of notifiers on any number of machines share the work) and marks it
delivered, or schedules a retry with exponential backoff, before committing. A notifier that dies
mid-delivery drops its connection, PostgreSQL releases the row, and another (or the restarted)
notifier delivers it. ``LISTEN`` wakes notifiers the moment an alert commits; polling is the
fallback. A delivery accepted by a channel is never sent again to that channel; the
``Idempotency-Key`` header covers the one remaining window (accepted, then the notifier died
before its commit). Every connection goes through the egress guard (``shared/egress.py``): a
destination that resolves to a non-public address is refused, not retried, and a receiver's
answer is never read — only its status is kept.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import httpx

from services.alerts.channels import Channel, deliver
from services.alerts.config import AlertsSettings
from services.alerts.metrics import DELIVERIES, DELIVERY_LATENCY, OUTBOX_BACKLOG
from services.alerts.state import loads
from services.alerts.tables import OUTBOX_CHANNEL
from services.alerts.worker import until_stopped
from shared.db import Database, raw_connection
from shared.egress import guarded_client, policy_from
from shared.faults import crash_point
from shared.listen_loop import Backoff, ListenLoop
from shared.logging import configure_logging, get_logger
from shared.worker import install_signal_handlers

log = get_logger("alerts.notifier")

_CLAIM = """
SELECT o.id, o.tenant_id, o.alert_id, o.attempts, o.payload,
       extract(epoch FROM now() - o.created_at) AS age_s,
       c.id AS channel_id, c.name, c.type, c.url, c.secret, c.recipients,
       c.enabled AND c.deleted_at IS NULL AS active
FROM alerts.outbox o JOIN alerts.notification_channel c ON c.id = o.channel_id
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND (o.event = 'opened' OR NOT EXISTS (  -- a resolution waits for its opening
      SELECT 1 FROM alerts.outbox p WHERE p.alert_id = o.alert_id
         AND p.channel_id = o.channel_id AND p.event = 'opened' AND p.status = 'pending'))
ORDER BY o.next_attempt_at
LIMIT 1
FOR UPDATE OF o SKIP LOCKED
"""


def backoff(attempt: int, settings: AlertsSettings) -> float:
    """Exponential backoff with ±20 % jitter: base, 2·base, 4·base … capped."""
    return Backoff(settings.retry_base_seconds, settings.retry_max_seconds).after(attempt)


class Notifier(ListenLoop):
    def __init__(self, settings: AlertsSettings, db: Database, client: httpx.AsyncClient):
        poll = settings.notifier_poll_seconds
        super().__init__(
            dsn=settings.dsn,
            channel=OUTBOX_CHANNEL,
            poll_seconds=poll,
            retry=Backoff(base=poll, cap=poll, jitter=0.0),  # a failed pass: poll again
            log=log,
            event_prefix="notifier",
        )
        self.settings = settings
        self.db = db
        self.client = client

    async def deliver_one(self) -> bool:
        """Claim, deliver and settle one due outbox row; False when none is due."""
        async with self.db.session() as session:
            conn = await raw_connection(session)
            row = await conn.fetchrow(_CLAIM)
            if row is None:
                return False
            channel = Channel(
                id=row["channel_id"],
                tenant_id=row["tenant_id"],
                name=row["name"],
                type=row["type"],
                url=row["url"],
                secret=row["secret"],
                recipients=loads(row["recipients"], []),
            )
            attempt = row["attempts"] + 1
            if not row["active"]:
                await self._settle(conn, row, attempt, "cancelled", None, "channel removed", 0.0)
                DELIVERIES.labels(channel.type, "cancelled").inc()
                return True
            payload: dict[str, Any] = loads(row["payload"], {})
            crash_point("notifier", "after_claim")
            result = await deliver(channel, payload, client=self.client, settings=self.settings)
            if result.ok:
                crash_point("notifier", "after_deliver")
            if result.ok:
                outcome = "delivered"
            elif result.retryable and attempt < self.settings.delivery_max_attempts:
                outcome = "retry"
            else:
                outcome = "failed"
            await self._settle(
                conn, row, attempt, outcome, result.status_code, result.error, result.duration_ms
            )
        DELIVERIES.labels(channel.type, outcome).inc()
        if outcome == "delivered":
            DELIVERY_LATENCY.labels(channel.type).observe(float(row["age_s"]))
        else:
            log.warning(
                "delivery.failed", channel=channel.type, outcome=outcome, error=result.error
            )
        return True

    async def _settle(
        self,
        conn: asyncpg.Connection,
        row: asyncpg.Record,
        attempt: int,
        outcome: str,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
    ) -> None:
        await conn.execute(
            "INSERT INTO alerts.delivery_log (tenant_id, outbox_id, alert_id, channel_id, "
            "attempt, outcome, status_code, error, duration_ms) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            row["tenant_id"], row["id"], row["alert_id"], row["channel_id"], attempt, outcome,
            status_code, error, duration_ms,
        )  # fmt: skip
        if outcome == "retry":
            await conn.execute(
                "UPDATE alerts.outbox SET attempts = $2, last_error = $3, "
                "next_attempt_at = now() + $4::interval WHERE id = $1",
                row["id"], attempt, error, timedelta(seconds=backoff(attempt, self.settings)),
            )  # fmt: skip
        else:
            status = "delivered" if outcome == "delivered" else outcome
            await conn.execute(
                "UPDATE alerts.outbox SET status = $2::text, attempts = $3, last_error = $4, "
                "delivered_at = CASE WHEN $2::text = 'delivered' THEN now() END WHERE id = $1",
                row["id"], status, attempt, error,
            )  # fmt: skip

    async def drain(self) -> int:
        """Deliver everything due, ``notifier_concurrency`` rows at a time."""
        delivered = 0

        async def slot() -> None:
            nonlocal delivered
            while await self.deliver_one():
                delivered += 1

        await asyncio.gather(*(slot() for _ in range(self.settings.notifier_concurrency)))
        return delivered

    async def _next_wait(self) -> float:
        async with self.db.session() as session:
            conn = await raw_connection(session)
            row = await conn.fetchrow(
                "SELECT count(*) AS backlog, "
                "extract(epoch FROM min(next_attempt_at) - now()) AS due_in "
                "FROM alerts.outbox WHERE status = 'pending'"
            )
        OUTBOX_BACKLOG.set(row["backlog"] if row else 0)
        due_in = row["due_in"] if row and row["due_in"] is not None else None
        wait = self.settings.notifier_poll_seconds
        return max(0.01, min(wait, float(due_in))) if due_in is not None else wait

    async def work_once(self) -> float:
        await self.drain()
        return await self._next_wait()

    def failed(self, failures: int) -> None:
        # the loop outlives a database outage; retried after a poll interval
        log.exception("notifier.loop_failed", consecutive_failures=failures)


async def run(settings: AlertsSettings, *, stop: asyncio.Event | None = None) -> None:
    """Deliver alerts until ``stop`` is set (or SIGTERM / SIGINT)."""
    if stop is None:
        configure_logging("alerts-notifier", level=settings.log_level, json=settings.log_json)
    own_stop = stop or asyncio.Event()
    if stop is None:
        install_signal_handlers(own_stop.set)
    db = Database(
        settings.dsn,
        pool_size=settings.notifier_concurrency + 1,
        application_name="alerts-notifier",
    )
    policy = policy_from(settings.egress_allow)
    async with guarded_client(policy, timeout=settings.delivery_timeout_seconds) as client:
        notifier = Notifier(settings, db, client)
        task = asyncio.create_task(notifier.run(own_stop))
        try:
            await until_stopped(task, own_stop)
            await task
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await notifier.close()
            await db.dispose()
