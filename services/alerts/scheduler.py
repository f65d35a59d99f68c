"""The decay scheduler: rescoring customers nobody has rescored for a while, so silence alone
lowers engagement and can open alerts (same scoring and rules as the worker).

Batches of customers, walked in primary-key order, are claimed with ``FOR UPDATE SKIP LOCKED``
(several schedulers share the work; the worker's row locks serialise with them) and scored by
one set-based statement (``decay.py``); the few customers the rules may act on — the candidates
— then go through the same Python rule engine as the worker, written back with one
``UPDATE … FROM unnest(…)``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.alerts.config import AlertsSettings
from services.alerts.decay import all_models, decay_batch, model_rows
from services.alerts.engine import Effects, rescore, write_effects
from services.alerts.metrics import RESCORE_DURATION, RESCORED
from services.alerts.state import (
    SELECT_COLUMNS,
    CustomerState,
    dumps,
    forget_closed_alerts,
    from_row,
    load_models,
)
from services.alerts.tables import ENGAGEMENT_CHANNEL
from services.alerts.worker import Clock, count_effects, until_stopped, utcnow
from shared.db import Database, raw_connection
from shared.faults import crash_point
from shared.logging import configure_logging, get_logger
from shared.worker import install_signal_handlers

log = get_logger("alerts.scheduler")

_UPDATE = """
UPDATE alerts.customer_state c SET
    score = u.score, contributions = u.contributions, recorded_score = u.recorded_score,
    peaks = u.peaks, rule_state = u.rule_state, open_alert_id = u.open_alert_id,
    open_alert_rules = u.open_alert_rules, scored_at = u.scored_at, updated_at = now()
FROM unnest($1::text[], $2::text[], $3::float8[], $4::jsonb[], $5::float8[], $6::jsonb[],
            $7::jsonb[], $8::uuid[], $9::jsonb[], $10::timestamptz[])
    AS u(tenant_id, customer_id, score, contributions, recorded_score, peaks, rule_state,
         open_alert_id, open_alert_rules, scored_at)
WHERE c.tenant_id = u.tenant_id AND c.customer_id = u.customer_id
"""


async def _save_scores(conn: asyncpg.Connection, states: list[CustomerState]) -> None:
    await conn.execute(
        _UPDATE,
        [s.tenant_id for s in states],
        [s.customer_id for s in states],
        [s.score for s in states],
        [dumps(s.contributions) for s in states],
        [s.recorded_score for s in states],
        [dumps(s.peaks) for s in states],
        [dumps(s.rule_state) for s in states],
        [s.open_alert_id for s in states],
        [dumps(s.open_alert_rules) if s.open_alert_rules is not None else None for s in states],
        [s.scored_at for s in states],
    )


async def rescore_batch(
    conn: asyncpg.Connection,
    *,
    now: datetime,
    due_before: datetime,
    after: tuple[str, str],
    limit: int,
    params: list[list[Any]],
    default_owner: str,
    tenant_id: str | None = None,
) -> tuple[int, tuple[str, str], Effects]:
    """Rescore up to ``limit`` customers after key ``after`` (in primary-key order) last scored
    before ``due_before``, in the caller's transaction: in SQL, then the rule candidates in
    Python. Returns the count and the last key."""
    effects = Effects()
    rows = await decay_batch(
        conn,
        params=params,
        now=now,
        due_before=due_before,
        after=after,
        limit=limit,
        tenant_id=tenant_id,
    )
    if not rows:
        return 0, after, effects
    if any(r["changed"] for r in rows):  # wake the engagement relay at commit
        await conn.execute("SELECT pg_notify($1, '')", ENGAGEMENT_CHANNEL)
    candidates = [(r["tenant_id"], r["customer_id"]) for r in rows if r["candidate"]]
    if candidates:
        found = await conn.fetch(
            f"SELECT {SELECT_COLUMNS} FROM alerts.customer_state WHERE (tenant_id, customer_id) "
            "IN (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY tenant_id, customer_id",
            [t for t, _ in candidates],
            [c for _, c in candidates],
        )  # already locked by this transaction's batch
        states = [from_row(r) for r in found]
        await forget_closed_alerts(conn, states)
        models = await load_models(conn, sorted({s.tenant_id for s in states}))
        for state in states:
            rescore(
                state,
                models[state.tenant_id],
                now,
                effects,
                cause="decay",
                default_owner=default_owner,
            )
        await _save_scores(conn, states)
        await write_effects(conn, effects)
    last = rows[-1]
    return len(rows), (last["tenant_id"], last["customer_id"]), effects


async def rescore_due(
    db: Database,
    *,
    now: datetime,
    stale_after: timedelta,
    batch_size: int = 5000,
    concurrency: int = 2,
    default_owner: str = "unassigned",
    tenant_id: str | None = None,
) -> int:
    """One pass over every customer not scored since ``now - stale_after``, in batches of one
    transaction each. ``concurrency`` walkers overlap one batch's database work with another's
    scoring; they (and other schedulers) skip each other's locked rows."""
    start = time.perf_counter()
    due_before = min(now - stale_after, now)
    total = 0

    async with db.session() as session:
        params = model_rows(await all_models(await raw_connection(session)))

    async def walk() -> None:
        nonlocal total
        after = ("", "")
        while True:
            async with db.session() as session:
                conn = await raw_connection(session)
                count, after, effects = await rescore_batch(
                    conn,
                    now=now,
                    due_before=due_before,
                    after=after,
                    limit=batch_size,
                    params=params,
                    default_owner=default_owner,
                    tenant_id=tenant_id,
                )
                if count:
                    crash_point("scheduler", "before_store")
            if count:
                crash_point("scheduler", "after_store")
            count_effects(effects)
            total += count
            if count < batch_size:
                return

    await asyncio.gather(*(walk() for _ in range(max(1, concurrency))))
    RESCORED.inc(total)
    RESCORE_DURATION.observe(time.perf_counter() - start)
    return total


async def prune_processed(db: Database, *, now: datetime, days: int) -> None:
    """Activity ids older than the broker's retention cannot be replayed; forget them."""
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute(
            "DELETE FROM alerts.processed_activity WHERE processed_at < $1",
            now - timedelta(days=days),
        )


async def run(
    settings: AlertsSettings, *, stop: asyncio.Event | None = None, clock: Clock = utcnow
) -> None:
    """Rescore stale customers every ``rescore_interval_seconds`` until stopped."""
    if stop is None:
        configure_logging("alerts-scheduler", level=settings.log_level, json=settings.log_json)
    own_stop = stop or asyncio.Event()
    if stop is None:
        install_signal_handlers(own_stop.set)
    db = Database(settings.dsn, pool_size=2, application_name="alerts-scheduler")

    async def loop() -> None:
        while not own_stop.is_set():
            try:
                now = clock()
                count = await rescore_due(
                    db,
                    now=now,
                    stale_after=timedelta(seconds=settings.rescore_after_seconds),
                    batch_size=settings.rescore_batch_size,
                    concurrency=settings.rescore_concurrency,
                    default_owner=settings.default_owner,
                )
                await prune_processed(db, now=now, days=settings.processed_retention_days)
                log.info("rescore.done", customers=count)
            except Exception:  # noqa: BLE001 - a failed pass is retried at the next interval
                log.exception("rescore.failed")
            try:
                await asyncio.wait_for(own_stop.wait(), settings.rescore_interval_seconds)
            except TimeoutError:
                pass

    task = asyncio.create_task(loop())
    try:
        await until_stopped(task, own_stop)
        await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await db.dispose()
