"""Rate limits: what they cost per request, measured against the same app without them.

One uvicorn process serving ``bench/_ratelimit_app.py`` (the shared app factory: metrics, guards,
key verification, rate limits; one authenticated route that does nothing else), on the embedded
PostgreSQL unless DATABASE_URL names one. A load generator in its own process
(``bench/_journey_load.py``: raw keep-alive HTTP/1.1, closed loop, 32 connections) measures
requests/s for three configurations, alternated over BENCH_RATELIMIT_ROUNDS (3) rounds of
BENCH_RATELIMIT_SECONDS (5) s each, medians reported:

- ``off``: ``WAYPOINT_RATE_LIMIT_ENABLED=false`` (the raw limit);
- ``postgres``: limits on, counters in PostgreSQL (the default);
- ``redis``: limits on, counters in Redis (``BENCH_REDIS_URL``, default redis://127.0.0.1:6379/0).

The limits are set high (nothing is refused): the point is the cost of counting. Besides
requests/s, the server process's CPU time per request (from /proc, so other work on the shared
machine disturbs it far less than throughput); the app alone, called in-process as ASGI with
limits off and on alternately (5 × 20,000 requests each: CPU µs per request, without uvicorn,
sockets or the load generator); and in-process: microseconds per
``RateLimiter.check_request`` and per cached key verification, and milliseconds per sync of 200
buckets with each store (the background task's round trip, off the request path). Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._journey_stack import machine, run_load  # noqa: E402
from shared.auth.service import create_key  # noqa: E402
from shared.auth.verifier import KeyVerifier  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.embedded import free_port, start_postgres, wait_for_port  # noqa: E402
from shared.migrations import upgrade  # noqa: E402
from shared.ratelimit import (  # noqa: E402
    Limits,
    PostgresCounterStore,
    RateLimiter,
    RedisCounterStore,
)

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("BENCH_RATELIMIT_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_RATELIMIT_SECONDS", "5"))
CONCURRENCY = int(os.environ.get("BENCH_RATELIMIT_CONCURRENCY", "32"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
HIGH = "1000000000"
CONFIGS: dict[str, dict[str, str]] = {
    "off": {"WAYPOINT_RATE_LIMIT_ENABLED": "false"},
    "postgres": {"WAYPOINT_RATE_LIMIT_ENABLED": "true"},
    "redis": {"WAYPOINT_RATE_LIMIT_ENABLED": "true", "WAYPOINT_REDIS_URL": REDIS_URL},
}


def serve(dsn: str, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # not used by this app
        "WAYPOINT_LOG_LEVEL": "WARNING",
        "WAYPOINT_RATE_LIMIT_KEY_READS": HIGH,
        "WAYPOINT_RATE_LIMIT_TENANT_READS": HIGH,
        **extra,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "bench._ratelimit_app:create",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port("127.0.0.1", port, timeout=60)
    return child, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()


def load(port: int, key: str) -> dict[str, Any]:
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "paths": ["/v1/ping"],
        "headers": {"Authorization": f"Bearer {key}"},
        "concurrency": CONCURRENCY,
        "duration": SECONDS,
        "rate": None,
    }
    return run_load(spec)


async def prepare(dsn: str) -> str:
    db = Database(dsn, pool_size=2)
    try:
        await upgrade(db)
        async with db.session() as session:
            key, _ = await create_key(
                session, tenant_id="bench-ratelimit", name="bench", scopes=["events:read"]
            )
        return key
    finally:
        await db.dispose()


async def in_process(dsn: str, key: str) -> dict[str, Any]:
    limiter = RateLimiter(Limits(key_reads=10**9, tenant_reads=10**9), None)
    n = 200_000
    started = time.perf_counter()
    for i in range(n):
        limiter.check_request(f"key-{i % 100}", f"tenant-{i % 10}", write=False)
    check_us = (time.perf_counter() - started) / n * 1e6
    db = Database(dsn, pool_size=2)
    try:
        verifier = KeyVerifier(db.sessionmaker, ttl=600)
        await verifier.verify(key, client="127.0.0.1")
        started = time.perf_counter()
        for _ in range(n):
            await verifier.verify(key, client="127.0.0.1")
        verify_us = (time.perf_counter() - started) / n * 1e6
        round_trips = {
            name: await _store_round_trip(store)
            for name, store in (
                ("postgres", PostgresCounterStore(db)),
                ("redis", RedisCounterStore(REDIS_URL)),
            )
        }
    finally:
        await db.dispose()
    return {
        "check_request_us": round(check_us, 2),
        "cached_verify_us": round(verify_us, 2),
        "sync_of_200_buckets_ms": round_trips,
    }


async def asgi_cpu(dsn: str, key: str, *, enabled: bool, requests: int = 20_000) -> float:
    """CPU microseconds per request of the app itself (no server, no sockets)."""
    os.environ.update(
        {
            "DATABASE_URL": dsn,
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "WAYPOINT_LOG_LEVEL": "WARNING",
            "WAYPOINT_RATE_LIMIT_ENABLED": "true" if enabled else "false",
            "WAYPOINT_RATE_LIMIT_KEY_READS": HIGH,
            "WAYPOINT_RATE_LIMIT_TENANT_READS": HIGH,
        }
    )
    from bench._ratelimit_app import create

    app = create()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/v1/ping", "raw_path": b"/v1/ping", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("bench", 80),
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"host", b"bench")],
    }  # fmt: skip
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async with app.router.lifespan_context(app):
        for _ in range(500):  # warm-up: caches
            await app(dict(scope), receive, send)
        started = time.process_time()
        for _ in range(requests):
            await app(dict(scope), receive, send)
        cpu = (time.process_time() - started) / requests * 1e6
    assert statuses == {200}, statuses
    return cpu


async def asgi_ab(dsn: str, key: str, rounds: int = 5) -> dict[str, float]:
    runs: dict[bool, list[float]] = {False: [], True: []}
    for i in range(rounds):
        for enabled in (False, True) if i % 2 == 0 else (True, False):
            runs[enabled].append(await asgi_cpu(dsn, key, enabled=enabled))
    off, on = statistics.median(runs[False]), statistics.median(runs[True])
    return {"app_cpu_us_off": round(off, 1), "app_cpu_us_on": round(on, 1)}


async def _store_round_trip(store: Any, cells: int = 200, repeats: int = 50) -> float:
    """Median milliseconds of one sync adding ``cells`` buckets (off the request path)."""
    start = int(time.time() // 60) * 60
    batch = sorted(((f"bench:{i}", start), 1) for i in range(cells))
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        await store.add(batch, 60)
        times.append((time.perf_counter() - began) * 1000)
    await store.close()
    return round(statistics.median(times), 2)


def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="waypoint-bench-ratelimit-"))
    postgres = None
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        postgres, dsn = start_postgres(tmp / "pg", cleanup="delete")
    try:
        key = asyncio.run(prepare(dsn))
        rps: dict[str, list[float]] = {name: [] for name in CONFIGS}
        p99: dict[str, list[float]] = {name: [] for name in CONFIGS}
        cpu_us: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for round_ in range(ROUNDS):
            for name, extra in CONFIGS.items():
                child, port = serve(dsn, extra)
                try:
                    load(port, key)  # warm-up: connections, caches
                    cpu_before = cpu_seconds(child.pid)
                    result = load(port, key)
                    cpu = cpu_seconds(child.pid) - cpu_before
                finally:
                    stop(child)
                assert set(result["statuses"]) == {"200"}, result["statuses"]
                rps[name].append(result["rps"])
                p99[name].append(result["p99_ms"])
                cpu_us[name].append(cpu / result["requests"] * 1e6)
                print(f"round {round_ + 1} {name}: {result['rps']:.0f} req/s, "
                      f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                      f"{cpu_us[name][-1]:.0f} µs CPU per request")  # fmt: skip
        medians = {name: statistics.median(values) for name, values in rps.items()}
        summary: dict[str, Any] = {
            "bench": "ratelimit",
            "machine": machine(),
            "rounds": ROUNDS,
            "seconds": SECONDS,
            "concurrency": CONCURRENCY,
            "rps": {k: round(v) for k, v in medians.items()},
            "p99_ms": {k: round(statistics.median(v), 2) for k, v in p99.items()},
            "ratio_postgres": round(medians["postgres"] / medians["off"], 3),
            "ratio_redis": round(medians["redis"] / medians["off"], 3),
            "cpu_us_per_request": {k: round(statistics.median(v), 1) for k, v in cpu_us.items()},
            **asyncio.run(asgi_ab(dsn, key)),
            **asyncio.run(in_process(dsn, key)),
        }
        return summary
    finally:
        if postgres is not None:
            postgres.cleanup()


if __name__ == "__main__":
    print(json.dumps(main()))
