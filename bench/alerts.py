"""Alerts: end-to-end alert latency and decay rescoring, each against a raw limit in the same run.

(a) alert latency: from producing the activity that pushes a customer's score below the
    threshold to the signed webhook arriving at a local HTTP receiver, through real worker and
    notifier processes (``waypoint worker alerts worker|notifier``), while background activity
    for other customers flows; raw limit: a bare Kafka produce→consume round trip with the same
    consumer settings plus a bare HTTP POST to the same receiver;
(b) rescoring the time decay of 100,000 customers (the scheduler's pass); raw limit: one
    set-based UPDATE touching the same rows.

Starts the embedded PostgreSQL and broker unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS name
others. Options by environment: BENCH_ALERTS_ALERTS (250), BENCH_ALERTS_BACKGROUND_RATE (500
activities/s), BENCH_ALERTS_CUSTOMERS (100000). Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from services.alerts.config import AlertsSettings
from services.alerts.model import EngagementModel
from services.alerts.repository import put_model, replace_channels
from services.alerts.scheduler import rescore_due
from services.alerts.schemas import ChannelIn
from shared.auth.service import ensure_tenant
from shared.db import Database, raw_connection
from shared.embedded import Infrastructure, free_port
from shared.events.activity import CustomerActivity
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]
ALERTS = int(os.environ.get("BENCH_ALERTS_ALERTS", "250"))
BACKGROUND_RATE = float(os.environ.get("BENCH_ALERTS_BACKGROUND_RATE", "500"))
CUSTOMERS = int(os.environ.get("BENCH_ALERTS_CUSTOMERS", "100000"))
BACKGROUND_CUSTOMERS = 2000
SECRET = "bench-secret-0123456789abcdef"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def usage(tenant: str, customer: str, active: int) -> CustomerActivity:
    now = datetime.now(UTC)
    return CustomerActivity(
        tenant=tenant,
        customer_id=customer,
        occurred_at=now,
        traits={"csm_owner": "bench"},
        event={
            "id": uuid.uuid4().hex,
            "type": "product.used",
            "time": now.isoformat(),
            "tenant": tenant,
            "data": {
                "identifiers": [{"type": "crm_id", "value": customer}],
                "active_seats": active,
                "purchased_seats": 10,
            },
        },
    )


class Receiver:
    """A minimal HTTP/1.1 keep-alive receiver recording when each alert arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                now = time.perf_counter()
                payload = orjson.loads(body) if body else {}
                if "customer_id" in payload:
                    self.arrivals.setdefault(payload["customer_id"], now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server:
            self.server.close()


def process_env(settings: AlertsSettings) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYPOINT_LOG_JSON": "false",
        "WAYPOINT_LOG_LEVEL": "WARNING",
        "WAYPOINT_TOPIC_ACTIVITY": settings.topic_activity,
        "WAYPOINT_TOPIC_DEAD_LETTER": settings.topic_dead_letter,
        "WAYPOINT_ALERTS_CONSUMER_GROUP": settings.consumer_group,
        "WAYPOINT_EGRESS_ALLOW": "127.0.0.1",  # the receiver is local (docs/security.md)
    }


async def raw_limits(settings: AlertsSettings, receiver: Receiver) -> dict[str, float]:
    """Kafka round trip with the worker's consumer settings, and a bare POST to the receiver."""
    topic = f"{settings.topic_activity}.raw"
    await ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    consumer = make_consumer(
        settings,
        topic,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        session_timeout_ms=6000,
    )
    await producer.start()
    await consumer.start()
    trips: list[float] = []
    try:
        await producer.send_and_wait(topic, b"warm")
        await consumer.getone()
        for _ in range(200):
            start = time.perf_counter()
            await producer.send_and_wait(topic, b"x")
            await consumer.getone()
            trips.append(time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()
    posts: list[float] = []
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            start = time.perf_counter()
            await client.post(f"http://127.0.0.1:{receiver.port}/raw", content=b"{}")
            posts.append(time.perf_counter() - start)
    return {
        "kafka_p50_ms": 1000 * pct(trips, 0.5),
        "kafka_p99_ms": 1000 * pct(trips, 0.99),
        "post_p50_ms": 1000 * pct(posts, 0.5),
        "post_p99_ms": 1000 * pct(posts, 0.99),
    }


async def count_states(db: Database, tenant: str) -> int:
    async with db.session() as session:
        conn = await raw_connection(session)
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM alerts.customer_state WHERE tenant_id = $1", tenant
            )
        )


async def bench_latency(settings: AlertsSettings, db: Database) -> dict[str, Any]:
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    receiver = Receiver()
    await receiver.start()
    model = EngagementModel.model_validate(
        {
            "weights": {"activity": 30, "utilisation": 70, "cases": 0, "friction": 0,
                        "satisfaction": 0, "sentiment": 0},
            "thresholds": {"alert_below": 40},
        }
    )  # fmt: skip
    async with db.session() as session:
        await ensure_tenant(session, tenant)
        await put_model(session, tenant, model, actor="bench")
        channel = ChannelIn.model_validate(
            {"name": "hook", "type": "webhook", "secret": SECRET,
             "url": f"http://127.0.0.1:{receiver.port}/hook"}
        )  # fmt: skip
        assert not await replace_channels(session, tenant, [channel])
    raw = await raw_limits(settings, receiver)
    print(
        f"    raw limit: Kafka round trip p50 {raw['kafka_p50_ms']:.1f} ms / p99 "
        f"{raw['kafka_p99_ms']:.1f} ms; HTTP POST p50 {raw['post_p50_ms']:.1f} ms / p99 "
        f"{raw['post_p99_ms']:.1f} ms"
    )
    env = process_env(settings)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "alerts", name],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for name in ("worker", "notifier")
    ]
    producer = make_producer(settings)
    await producer.start()
    stop_background = asyncio.Event()
    background_sent = 0

    background_started = 0.0

    async def background() -> None:
        nonlocal background_sent, background_started
        background_started = time.perf_counter()
        interval = 0.05
        per_tick = max(1, int(BACKGROUND_RATE * interval))
        while not stop_background.is_set():
            tick = time.perf_counter()
            for _ in range(per_tick):
                customer = f"bg-{background_sent % BACKGROUND_CUSTOMERS}"
                a = usage(tenant, customer, 10)
                await producer.send(settings.topic_activity, a.to_json(), key=a.kafka_key())
                background_sent += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - tick)))

    try:
        targets = [f"target-{i}" for i in range(ALERTS)]
        for customer in targets:  # healthy first: 12 uses, every seat active
            for _ in range(12):
                a = usage(tenant, customer, 10)
                await producer.send(settings.topic_activity, a.to_json(), key=a.kafka_key())
        await producer.flush()
        deadline = time.monotonic() + 120
        while await count_states(db, tenant) < ALERTS and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        load = asyncio.create_task(background())
        await asyncio.sleep(3.0)  # background flowing, its customers known
        produced: dict[str, float] = {}
        started = time.perf_counter()
        for customer in targets:
            a = usage(tenant, customer, 1)  # two seats in ten fall to one: below 40
            produced[customer] = time.perf_counter()
            await producer.send(settings.topic_activity, a.to_json(), key=a.kafka_key())
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 60
        while len(receiver.arrivals.keys() & produced.keys()) < ALERTS:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        background_s = time.perf_counter() - background_started
        stop_background.set()
        await load
    finally:
        await producer.stop()
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        await receiver.stop()
    latencies = [receiver.arrivals[c] - t for c, t in produced.items() if c in receiver.arrivals]
    return {
        "alerts": ALERTS,
        "delivered": len(latencies),
        "p50_ms": 1000 * pct(latencies, 0.5) if latencies else None,
        "p99_ms": 1000 * pct(latencies, 0.99) if latencies else None,
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else None,
        "background_per_s": background_sent / max(background_s, 1e-9),
        "window_s": elapsed,
        **raw,
    }


async def bench_rescore(db: Database) -> dict[str, Any]:
    tenant = f"bench-decay-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    async with db.session() as session:
        await ensure_tenant(session, tenant)
        conn = await raw_connection(session)
        # customers last active 1-40 days ago, with seats; 1 in ~40 is quiet enough to alert
        await conn.execute(
            """
            INSERT INTO alerts.customer_state (tenant_id, customer_id, traits, activity,
                decayed_at, seats_active, seats_purchased, last_event_at, score, recorded_score,
                scored_at, rule_state, peaks)
            SELECT $1, 'c-' || g, '{"csm_owner": "bench"}'::jsonb, 4 + (g % 12),
                   $2::timestamptz - make_interval(days => 1 + g % 40), 3 + g % 8, 10,
                   $2::timestamptz - make_interval(days => 1 + g % 40), 60, 60,
                   $2::timestamptz - interval '2 hours', '{}'::jsonb, '[]'::jsonb
            FROM generate_series(1, $3) AS g
            """,
            tenant,
            now,
            CUSTOMERS,
        )
    await _analyze(db)
    start = time.perf_counter()
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute(
            "UPDATE alerts.customer_state SET updated_at = now() WHERE tenant_id = $1", tenant
        )
    raw_s = time.perf_counter() - start
    start = time.perf_counter()
    rescored = await rescore_due(
        db, now=now, stale_after=timedelta(hours=1), batch_size=5000, tenant_id=tenant
    )
    rescore_s = time.perf_counter() - start
    async with db.session() as session:
        conn = await raw_connection(session)
        opened = await conn.fetchval(
            "SELECT count(*) FROM alerts.alert WHERE tenant_id = $1", tenant
        )
    return {
        "customers": rescored,
        "rescore_s": rescore_s,
        "raw_update_s": raw_s,
        "alerts_opened": int(opened),
    }


async def _analyze(db: Database) -> None:
    async with db.session() as session:
        conn = await raw_connection(session)
        await conn.execute("ANALYZE alerts.customer_state")


async def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="waypoint-bench-alerts-"))
    infra = Infrastructure.start(
        tmp,
        database_url=os.environ.get("DATABASE_URL"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
    )
    dsn, bootstrap = infra.database_url, infra.kafka_bootstrap_servers
    try:
        run = uuid.uuid4().hex[:6]
        settings = AlertsSettings(
            database_url=dsn,
            kafka_bootstrap_servers=bootstrap,
            topic_activity=f"bench-{run}.activity",
            topic_dead_letter=f"bench-{run}.deadletter",
            topic_partitions=4,
            consumer_group=f"bench-alerts-{run}",
        )
        db = Database(dsn, pool_size=4, application_name="bench-alerts")
        await upgrade(db, ["auth", "alerts"])
        await ensure_topics(settings, [settings.topic_activity, settings.topic_dead_letter])

        print(f"(a) alert latency: {ALERTS} alerts, background {BACKGROUND_RATE:.0f} activities/s")
        latency = await bench_latency(settings, db)
        print(
            f"    delivered {latency['delivered']}/{ALERTS}: p50 {latency['p50_ms']:.0f} ms, "
            f"p99 {latency['p99_ms']:.0f} ms (target ≤ 1000), mean {latency['mean_ms']:.0f} ms; "
            f"background {latency['background_per_s']:.0f} activities/s"
        )
        floor = latency["kafka_p50_ms"] + latency["post_p50_ms"]
        print(f"    ratio p50 / raw (Kafka round trip + POST): {latency['p50_ms'] / floor:.1f}")
        print(f"(b) decay rescoring of {CUSTOMERS:,} customers")
        rescore = await bench_rescore(db)
        print(
            f"    rescored {rescore['customers']:,} in {rescore['rescore_s']:.2f} s (target ≤ 10), "
            f"{rescore['customers'] / rescore['rescore_s']:,.0f}/s; "
            f"{rescore['alerts_opened']:,} alerts opened; raw set-based UPDATE of the same rows "
            f"{rescore['raw_update_s']:.2f} s "
            f"(ratio {rescore['rescore_s'] / rescore['raw_update_s']:.1f})"
        )
        await db.dispose()
        return {
            "bench": "alerts",
            "alerts": ALERTS,
            "delivered": latency["delivered"],
            "latency_p50_ms": round(latency["p50_ms"], 1),
            "latency_p99_ms": round(latency["p99_ms"], 1),
            "background_per_s": round(latency["background_per_s"]),
            "raw_kafka_p50_ms": round(latency["kafka_p50_ms"], 1),
            "raw_post_p50_ms": round(latency["post_p50_ms"], 1),
            "rescore_customers": rescore["customers"],
            "rescore_s": round(rescore["rescore_s"], 2),
            "raw_update_s": round(rescore["raw_update_s"], 2),
            "rescore_alerts_opened": rescore["alerts_opened"],
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, shared",
        }
    finally:
        infra.stop()


if __name__ == "__main__":
    result = asyncio.run(main())
    print(json.dumps(result))
