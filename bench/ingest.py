"""Ingest throughput, each figure against the raw limit measured in the same run.

(a) raw asyncpg COPY of the same rows into a table of the same shape (keys and indexes);
(b) end to end: N events already in the raw topic → validated, stored, published to the
    normalized topic and offsets committed, by real worker processes (``waypoint worker ingest``);
(c) HTTP: ``POST /v1/events`` batches of 100 events against uvicorn in a subprocess.

Starts the embedded PostgreSQL and broker unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS name
others. Options by environment: BENCH_INGEST_EVENTS (200000), BENCH_INGEST_WORKERS (2),
BENCH_INGEST_HTTP_SECONDS (10), BENCH_INGEST_HTTP_CONCURRENCY (16). Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import TopicPartition
from sqlalchemy import text

from services.ingest.config import IngestSettings
from services.ingest.records import store_row
from services.ingest.repository import EVENT_COLUMNS
from shared.auth.service import create_key, ensure_tenant
from shared.db import Database, asyncpg_dsn
from shared.embedded import Infrastructure, free_port, wait_for_port
from shared.events import validate_event
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]
N = int(os.environ.get("BENCH_INGEST_EVENTS", "200000"))
WORKERS = int(os.environ.get("BENCH_INGEST_WORKERS", "2"))
HTTP_SECONDS = float(os.environ.get("BENCH_INGEST_HTTP_SECONDS", "10"))
HTTP_CONCURRENCY = int(os.environ.get("BENCH_INGEST_HTTP_CONCURRENCY", "16"))
PARTITIONS = 4
TENANT = "bench"
PROBE_TENANT = "bench-probe"

# --- realistic events -----------------------------------------------------------------------

_KINDS: list[tuple[str, str, int]] = [  # type, channel, weight
    ("contact.started", "phone", 8),
    ("ivr.step", "ivr", 10),
    ("contact.queued", "phone", 6),
    ("agent.joined", "phone", 6),
    ("contact.ended", "phone", 8),
    ("contact.abandoned", "ivr", 2),
    ("message.received", "web_chat", 12),
    ("message.sent", "web_chat", 10),
    ("contact.transferred", "phone", 2),
    ("case.opened", "email", 3),
    ("case.resolved", "email", 2),
    ("fact.collected", "phone", 4),
    ("survey.responded", "web", 2),
    ("identity.linked", "app", 2),
    ("product.used", "app", 18),
    ("marketing.touched", "web", 3),
    ("callback.requested", "web", 1),
]
_TYPES = [k for k, _c, w in _KINDS for _ in range(w)]
_CHANNEL = {k: c for k, c, _w in _KINDS}


def _data(kind: str, rnd: random.Random, n: int) -> dict[str, Any]:
    if kind == "contact.started":
        return {"direction": "inbound", "contact_reason": rnd.choice(["billing", "outage", "move"])}
    if kind == "ivr.step":
        return {"node": rnd.choice(["menu", "billing", "auth", "agent"]), "input": str(n % 9)}
    if kind == "contact.queued":
        return {"queue": rnd.choice(["billing", "tech", "sales"])}
    if kind == "agent.joined":
        return {"agent_id": f"agent-{n % 120}", "team": "tier1", "department": "care"}
    if kind == "contact.ended":
        return {"disposition": "done", "resolved": rnd.random() < 0.7, "duration_s": n % 900}
    if kind == "contact.abandoned":
        return {"where": "ivr", "wait_s": n % 300, "node": "billing"}
    if kind in {"message.received", "message.sent"}:
        return {"text": "Hello, my internet is down again since this morning.", "sentiment": -0.4}
    if kind == "contact.transferred":
        return {"from_agent": "agent-1", "to_queue": "tech", "reason": "skill"}
    if kind in {"case.opened", "case.resolved"}:
        return {"case_id": f"C-{n % 50_000}", "reason": "billing", "status": "open"}
    if kind == "fact.collected":
        return {"name": "address_confirmed", "value": True, "verified_by": "agent"}
    if kind == "survey.responded":
        return {"survey": "csat", "score": rnd.randint(1, 5), "comment": "ok"}
    if kind == "identity.linked":
        return {"traits": {"tier": rnd.choice(["gold", "silver"]), "region": "emea"}}
    if kind == "product.used":
        return {"feature": rnd.choice(["reports", "export", "api"]), "active_seats": n % 40}
    if kind == "marketing.touched":
        return {"campaign": "winter", "medium": "email"}
    return {"number": "+14155550100"}


def make_events(count: int, *, seed: int = 7, customers: int = 20_000) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    start = datetime.now(UTC) - timedelta(seconds=count + 3600)
    events = []
    for n in range(count):
        c = rnd.randrange(customers)
        kind = rnd.choice(_TYPES)
        channel = _CHANNEL[kind]
        if channel in {"phone", "ivr"}:
            ids = [{"type": "phone", "value": f"(415) {200 + c // 10_000:03d}-{c % 10_000:04d}"}]
            ids[0]["verified_by"] = "caller_id"
        elif channel == "web_chat":
            ids = [
                {"type": "chat_session", "value": f"chat-{c}-{n // 50}"},
                {"type": "email", "value": f"Customer{c}@Mail.Example.net"},
            ]
        else:
            ids = [{"type": "email", "value": f"Customer{c}@Mail.Example.net"}]
        if c % 3 == 0:
            ids.append({"type": "crm_id", "value": f"CRM-{c:06d}", "verified_by": "login"})
        events.append(
            {
                "specversion": "1.0",
                "id": f"{uuid.UUID(int=rnd.getrandbits(128))}",
                "source": f"bench/{channel}",
                "type": kind,
                "time": (start + timedelta(seconds=n)).isoformat(),
                "tenant": TENANT,
                "data": {
                    "identifiers": ids,
                    "channel": channel,
                    "interaction_id": f"i-{c}-{n // 20}",
                    **_data(kind, rnd, n),
                },
            }
        )
    return events


# --- (a) raw COPY -----------------------------------------------------------------------------


async def bench_copy(dsn: str, values: list[bytes]) -> float:
    now = datetime.now(UTC)
    rows = []
    for value in values:
        envelope = validate_event(value, now=now)
        rows.append(store_row(envelope, envelope.to_json(), now))
    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        await conn.execute("DROP TABLE IF EXISTS public.bench_copy")
        await conn.execute("CREATE TABLE public.bench_copy (LIKE ingest.event INCLUDING ALL)")
        started = time.perf_counter()
        for i in range(0, len(rows), 5000):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "bench_copy", records=rows[i : i + 5000], columns=EVENT_COLUMNS
                )
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE public.bench_copy")
    finally:
        await conn.close()
    return len(rows) / elapsed


# --- (b) end to end ---------------------------------------------------------------------------


def worker_env(settings: IngestSettings, group: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYPOINT_LOG_JSON": "false",
        "WAYPOINT_LOG_LEVEL": "WARNING",
        "WAYPOINT_TOPIC_RAW": settings.topic_raw,
        "WAYPOINT_TOPIC_NORMALIZED": settings.topic_normalized,
        "WAYPOINT_TOPIC_DEAD_LETTER": settings.topic_dead_letter,
        "WAYPOINT_INGEST_CONSUMER_GROUP": group,
    }


async def produce_all(settings: IngestSettings, values: list[bytes], keys: list[bytes]) -> float:
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    started = time.perf_counter()
    try:
        for i in range(0, len(values), 10_000):
            pending = [
                await producer.send(settings.topic_raw, value=v, key=k)
                for v, k in zip(values[i : i + 10_000], keys[i : i + 10_000], strict=True)
            ]
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(values) / (time.perf_counter() - started)


async def committed_total(probe: Any, topic: str) -> int:
    """Offsets the group committed (read without joining it: the probe never subscribes)."""
    total = 0
    for p in range(PARTITIONS):
        offset = await probe.committed(TopicPartition(topic, p))
        total += offset or 0
    return total


async def published_ids(settings: IngestSettings, topic: str, expect: int) -> set[str]:
    """Distinct event ids on the normalized topic (read back: end offsets alone could lie)."""
    consumer = make_consumer(settings, topic, group_id=f"bench-check-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    ids: set[str] = set()
    idle_since = time.perf_counter()
    try:
        while len(ids) < expect and time.perf_counter() - idle_since < 5:
            batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for records in batches.values():
                idle_since = time.perf_counter()
                events = (orjson.loads(r.value) for r in records)
                ids.update(e["id"] for e in events if e["tenant"] == TENANT)
    finally:
        await consumer.stop()
    return ids


async def probe_latency(settings: IngestSettings, count: int = 60) -> list[float]:
    """One event at a time through the idle workers: raw topic → normalized topic."""
    producer = make_producer(settings, linger_ms=0)
    reader = make_consumer(settings, group_id=None, fetch_max_wait_ms=20)
    await producer.start()
    await reader.start()
    latencies: list[float] = []
    try:
        reader.assign([TopicPartition(settings.topic_normalized, p) for p in range(PARTITIONS)])
        await reader.seek_to_end()
        for event in make_events(count, seed=99):
            value = orjson.dumps({**event, "tenant": PROBE_TENANT})
            started = time.perf_counter()
            await producer.send_and_wait(settings.topic_raw, value, key=event["id"].encode())
            seen = False
            while not seen and time.perf_counter() - started < 10:
                batches = await reader.getmany(timeout_ms=500)
                seen = any(
                    orjson.loads(r.value)["id"] == event["id"]
                    for records in batches.values()
                    for r in records
                )
            latencies.append(time.perf_counter() - started)
    finally:
        await reader.stop()
        await producer.stop()
    return sorted(latencies)


async def bench_end_to_end(settings: IngestSettings, db: Database, values: list[bytes]) -> dict:
    group = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    probe = make_consumer(settings, group_id=group)
    await probe.start()
    log = open(Path(tempfile.gettempdir()) / "waypoint-bench-ingest-workers.log", "ab")  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "ingest"],
            cwd=ROOT,
            env=worker_env(settings, group),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(WORKERS)
    ]
    launched = time.perf_counter()
    first_commit = None
    try:
        while True:
            done = await committed_total(probe, settings.topic_raw)
            if done and first_commit is None:
                first_commit = (time.perf_counter(), done)
            if done >= len(values):
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker exited; see the worker log")
            await asyncio.sleep(0.1)
        finished = time.perf_counter()
        latencies = await probe_latency(settings)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        await probe.stop()
        log.close()
    async with db.session() as session:
        stored = (
            await session.execute(
                text("SELECT count(*) FROM ingest.event WHERE tenant_id = :t"), {"t": TENANT}
            )
        ).scalar_one()
    published = len(await published_ids(settings, settings.topic_normalized, len(values)))
    assert first_commit is not None
    steady = (len(values) - first_commit[1]) / max(finished - first_commit[0], 1e-9)
    return {
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "events_per_s": steady,
        "with_startup_events_per_s": len(values) / (finished - launched),
        "startup_s": first_commit[0] - launched,
        "stored": stored,
        "published": published,
    }


# --- (c) HTTP ---------------------------------------------------------------------------------


async def bench_http(settings: IngestSettings, key: str) -> dict:
    port = free_port()
    env = {**worker_env(settings, "unused"), "WAYPOINT_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "ingest", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        events = make_events(100 * 50, seed=11)
        bodies = [orjson.dumps(events[i : i + 100]) for i in range(0, len(events), 100)]
        requests = [
            (
                "POST /v1/events HTTP/1.1\r\nHost: bench\r\n"
                f"Authorization: Bearer {key}\r\n"
                "Content-Type: application/cloudevents-batch+json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            for body in bodies
        ]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(50):  # wait for the lifespan (database, producer) to be up
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
        latencies: list[float] = []
        failures = 0
        deadline = time.perf_counter() + HTTP_SECONDS

        async def user(n: int) -> None:
            """One keep-alive connection; a raw HTTP/1.1 client so the load costs little CPU."""
            nonlocal failures
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            i = n
            try:
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    writer.write(requests[i % len(requests)])
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    body = await reader.readexactly(int(length.group(1)) if length else 0)
                    latencies.append(time.perf_counter() - started)
                    if head[9:12] != b"202":
                        failures += 1
                        if failures <= 3:
                            print(f"    HTTP {head[9:12].decode()}: {body[:300]!r}")
                    i += HTTP_CONCURRENCY
            finally:
                writer.close()

        started = time.perf_counter()
        await asyncio.gather(*(user(n) for n in range(HTTP_CONCURRENCY)))
        elapsed = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    latencies.sort()
    return {
        "http_requests_per_s": len(latencies) / elapsed,
        "http_events_per_s": 100 * len(latencies) / elapsed,
        "http_p50_ms": 1000 * latencies[len(latencies) // 2],
        "http_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "http_failures": failures,
    }


# --- main -------------------------------------------------------------------------------------


async def main() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="waypoint-bench-ingest-"))
    infra = Infrastructure.start(
        tmp,
        database_url=os.environ.get("DATABASE_URL"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
    )
    dsn, bootstrap = infra.database_url, infra.kafka_bootstrap_servers
    try:
        run = uuid.uuid4().hex[:6]
        settings = IngestSettings(
            database_url=dsn,
            kafka_bootstrap_servers=bootstrap,
            topic_raw=f"bench-{run}.raw",
            topic_normalized=f"bench-{run}.normalized",
            topic_dead_letter=f"bench-{run}.deadletter",
            topic_partitions=PARTITIONS,
        )
        db = Database(dsn, pool_size=2, application_name="bench")
        await upgrade(db, ["auth", "ingest"])
        await ensure_topics(
            settings, [settings.topic_raw, settings.topic_normalized, settings.topic_dead_letter]
        )
        async with db.session() as session:
            await ensure_tenant(session, TENANT)
            await ensure_tenant(session, PROBE_TENANT)
            await session.execute(
                text("DELETE FROM ingest.event WHERE tenant_id = :t"),
                {"t": TENANT},
            )
            key, _ = await create_key(
                session, tenant_id=TENANT, name="bench", scopes=["events:write"]
            )

        events = make_events(N)
        values = [orjson.dumps(e) for e in events]
        keys = [f"{TENANT}|{e['data']['identifiers'][0]['value']}".encode() for e in events]
        print(f"events: {N:,} ({sum(map(len, values)) / N:.0f} bytes each), workers: {WORKERS}")

        copy_rate = await bench_copy(dsn, values)
        print(f"(a) raw COPY into the same table shape: {copy_rate:,.0f} rows/s")
        produce_rate = await produce_all(settings, values, keys)
        print(f"    (producing them to the raw topic: {produce_rate:,.0f} events/s)")
        e2e = await bench_end_to_end(settings, db, values)
        print(
            f"(b) end to end (stored, published, committed): {e2e['events_per_s']:,.0f} events/s "
            f"steady; {e2e['with_startup_events_per_s']:,.0f}/s including "
            f"{e2e['startup_s']:.1f}s worker start-up and group join"
        )
        print(f"    stored {e2e['stored']:,}, published {e2e['published']:,}")
        print(
            f"    one event at a time, raw topic → normalized topic: p50 "
            f"{e2e['latency_p50_ms']:.0f} ms, p99 {e2e['latency_p99_ms']:.0f} ms"
        )
        ratio = e2e["events_per_s"] / copy_rate
        print(f"    ratio end-to-end / raw COPY: {ratio:.2f}")
        http = await bench_http(settings, key)
        print(
            f"(c) HTTP batches of 100, {HTTP_CONCURRENCY} concurrent: "
            f"{http['http_requests_per_s']:,.0f} requests/s ({http['http_events_per_s']:,.0f} "
            f"events/s), p50 {http['http_p50_ms']:.1f} ms, p99 {http['http_p99_ms']:.1f} ms, "
            f"{http['http_failures']} failures"
        )
        await db.dispose()
        return {
            "bench": "ingest",
            "events": N,
            "workers": WORKERS,
            "events_per_s": round(e2e["events_per_s"]),
            "events_per_s_with_startup": round(e2e["with_startup_events_per_s"]),
            "copy_rows_per_s": round(copy_rate),
            "ratio": round(ratio, 3),
            "stored": e2e["stored"],
            "published": e2e["published"],
            "latency_p50_ms": round(e2e["latency_p50_ms"], 1),
            "latency_p99_ms": round(e2e["latency_p99_ms"], 1),
            **{k: round(v, 1) for k, v in http.items()},
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, shared",
        }
    finally:
        infra.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
