"""Screen pop: CPU per request of each layer, in-process (no sockets, no load generator).

On a shared machine requests/s follow the neighbours; CPU time per request does not. The
journey app is driven through ASGI directly (lifespan started, real PostgreSQL and broker,
context cache on and warm), alternating, BENCH_SCREEN_POP_ROUNDS (5) × BENCH_SCREEN_POP_N
(5,000) requests each, BENCH_SCREEN_POP_CONCURRENCY (8: under the pool's 10 connections) in flight:

- ``/healthz``: the same app's bare endpoint (middleware, routing, FastAPI's response model);
- ``/v1/context`` as served (``services/journey/context/fast.py``: auth, scope, rate limit,
  the look-up, the card);
- ``/v1/context?…&reveal_sensitive=false``: the same through FastAPI's handler (dependencies,
  parameter validation), as it was served before;
- the same work as a plain Starlette route calling the same functions (auth, scope, rate
  limit, normalization, cache, masking), to size what FastAPI's layers cost;
- ``/v1/context`` as served with the context cache off (``app.state.cache`` set aside for the
  round): the uncached screen pop, its look-ups batched with the others in flight
  (``app.state.lookups``: one statement per batch; the mean batch size is printed), and the same
  with batching off (``app.state.lookups`` set aside: one statement per request, as before);
  process CPU, and beside it the PostgreSQL cluster's CPU per request (its processes' CPU
  over the round);
- the work alone (look-up in the warm cache + the card + serialization), no HTTP at all, and
  the same through the rendered-card cache (``service.screen_pop_card``);
- the floor of an uncached pop on this machine: ``SELECT 1`` on the same asyncpg pool, and the
  screen pop's statement alone (``repository.by_identifier``);
- when PostgreSQL is reached by a Unix-domain socket (the embedded cluster listens on nothing
  else): the uncached pop and both floors again over loopback TCP, through ``socat`` (in its own
  process, so not in the measured CPU) to the same server, on a second pool of the same size:
  what the socket saves in the same run.

Medians of process CPU µs per request. ``BENCH_SCREEN_POP_PROFILE=1`` then profiles
(cProfile) BENCH_SCREEN_POP_N cached and uncached screen pops as served and prints the top
entries. Last line: JSON.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from bench._journey_stack import (  # noqa: E402
    TENANT,
    Stack,
    cluster_pids,
    cpu_seconds,
    customer_events,
    machine,
    phone,
)
from services.journey.app import create_app  # noqa: E402
from services.journey.applier import ChunkApplier, Incoming  # noqa: E402
from services.journey.context import repository as repo  # noqa: E402
from services.journey.context import service  # noqa: E402
from services.journey.deps import json_response  # noqa: E402
from shared.auth.dependencies import get_principal  # noqa: E402
from shared.auth.models import Scope  # noqa: E402
from shared.db import Database, raw_connection, raw_pool  # noqa: E402
from shared.embedded import free_port, wait_for_port  # noqa: E402
from shared.events import parse_normalized  # noqa: E402

CUSTOMERS = 200
N = int(os.environ.get("BENCH_SCREEN_POP_N", "5000"))
ROUNDS = int(os.environ.get("BENCH_SCREEN_POP_ROUNDS", "5"))
PROFILE = os.environ.get("BENCH_SCREEN_POP_PROFILE") == "1"
# Requests in flight at once (each of this many coroutines serves its share in turn). A cached
# pop never waits, so this changes nothing for it; an uncached one waits for PostgreSQL, and
# one at a time the process's background tasks (rate-limit sync, broker client, timers), which
# cost CPU per second rather than per request, would be charged to it as the loaded machine
# stretches every round trip.
CONCURRENCY = int(os.environ.get("BENCH_SCREEN_POP_CONCURRENCY", "8"))
UNCACHED = "screen_pop_served_uncached"
UNCACHED_UNBATCHED = "screen_pop_served_uncached_unbatched"
UNCACHED_TCP = "screen_pop_served_uncached_tcp"
UNCACHED_ALL = (UNCACHED, UNCACHED_UNBATCHED, UNCACHED_TCP)


def socket_dir(dsn: str) -> str | None:
    """The ``host=/dir`` of a DSN that names a Unix-domain socket directory, else None."""
    hosts = parse_qs(urlsplit(dsn).query).get("host", [])
    return hosts[0] if hosts and hosts[0].startswith("/") else None


def tcp_relay(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    """socat from a loopback TCP port to the server's socket; returns it and a TCP DSN."""
    port = free_port()
    relay = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
         f"UNIX-CONNECT:{directory}/.s.PGSQL.5432"],
    )  # fmt: skip
    wait_for_port("127.0.0.1", port)
    return relay, f"postgresql://postgres@127.0.0.1:{port}/postgres"


async def plain_context(request: Request) -> Response:
    """The screen pop's work without FastAPI's dependency and parameter layers."""
    principal = await get_principal(request)
    principal.require(Scope.context_read)
    q = request.query_params
    state = request.app.state
    found = await service.find_by_identifier(
        state.pg_pool,
        principal.tenant_id,
        q["identifier_type"],
        q["value"],
        phone_region=principal.region(state.settings.phone_region),
        kind="context",
        cache=state.cache,
    )
    return json_response(service.context_view(found, now=datetime.now(UTC), reveal=False))


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8002),
        "app": app,
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def each(items: list[Any], step: Any) -> None:
    """``await step(item)`` for every item, CONCURRENCY at a time (interleaved shares)."""

    async def share(part: list[Any]) -> None:
        for item in part:
            await step(item)

    await asyncio.gather(*(share(items[i::CONCURRENCY]) for i in range(CONCURRENCY)))


async def background_cpu_us_per_s(seconds: float = 2.0) -> float:
    """Process CPU per second while no request is served (the app's background tasks)."""
    t0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return 1e6 * (time.process_time() - t0) / (time.monotonic() - w0)


async def profile(app: Any, paths: list[str], headers: list[tuple[bytes, bytes]]) -> str:
    """cProfile of ``paths`` served one after the other, timed in process CPU (not wall time:
    on a loaded machine, waiting for a core would dominate): the top entries by own time."""
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    await each(paths, lambda path: call(app, path, headers))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    return out.getvalue()


async def main() -> dict[str, Any]:
    stack = Stack()
    try:
        await stack.prepare()
        settings = stack.settings.model_copy(update={"context_cache_mb": 64})
        db = Database(settings.dsn, pool_size=2, application_name="bench-seed")
        items = [
            Incoming(parse_normalized(orjson.dumps(e)), orjson.dumps(e))
            for i in range(CUSTOMERS)
            for e in customer_events(i, datetime.now(UTC))
        ]
        async with db.session() as session:
            await ChunkApplier(await raw_connection(session), settings).run(items)
        await db.dispose()
        # one key does tens of thousands of look-ups here: counted, never refused
        app = create_app(
            settings.model_copy(
                update={"rate_limit_key_reads": 10**9, "rate_limit_tenant_reads": 10**9}
            )
        )
        app.router.routes.insert(0, Route("/bench/plain-context", plain_context))
        headers = [(b"authorization", f"Bearer {stack.key}".encode()), (b"host", b"bench")]
        pops = [f"?identifier_type=phone&value=%2B{phone(i % CUSTOMERS)[1:]}" for i in range(N)]
        variants = {
            "bare_healthz": ["/healthz"] * N,
            "screen_pop_served": [f"/v1/context{q}" for q in pops],
            "screen_pop_fastapi": [f"/v1/context{q}&reveal_sensitive=false" for q in pops],
            "screen_pop_plain_starlette": [f"/bench/plain-context{q}" for q in pops],
            UNCACHED: [f"/v1/context{q}" for q in pops],
            UNCACHED_UNBATCHED: [f"/v1/context{q}" for q in pops],
        }
        async with app.router.lifespan_context(app):
            for _ in range(200):  # wait for the LISTEN connection (the cache is off until then)
                if app.state.cache is not None and app.state.cache.enabled:
                    break
                await asyncio.sleep(0.05)
            for path in variants["screen_pop_fastapi"][:CUSTOMERS]:  # warm the cache
                assert await call(app, path, headers) == 200, path
            cache = app.state.cache
            batch_max = settings.context_lookup_batch_max
            floors = ["db_select_1_only", "db_by_identifier_only"]
            pools = {"": app.state.pg_pool}
            lookups = {"": app.state.lookups}
            directory = socket_dir(settings.dsn)
            if directory is not None and shutil.which("socat"):
                relay, tcp_dsn = tcp_relay(directory)
                pools["_tcp"] = await raw_pool(
                    tcp_dsn, "journey-api", min_size=2, max_size=settings.db_pool_size
                )
                lookups["_tcp"] = service.identifier_lookups(pools["_tcp"], batch_max)
                variants[UNCACHED_TCP] = variants[UNCACHED]
                floors += ["db_select_1_only_tcp", "db_by_identifier_only_tcp"]
            cpu: dict[str, list[float]] = {
                k: [] for k in [*variants, "work_only", "card_only", *floors]
            }
            wall: dict[str, list[float]] = {k: [] for k in [*variants, *floors]}
            pg_cpu: dict[str, list[float]] = {k: [] for k in variants if k in UNCACHED_ALL}
            batch_sizes: dict[str, list[float]] = {UNCACHED: [], UNCACHED_TCP: []}
            background: list[float] = []
            for _ in range(ROUNDS):
                for name, paths in variants.items():
                    suffix = "_tcp" if name == UNCACHED_TCP else ""
                    app.state.cache = None if name in UNCACHED_ALL else cache
                    app.state.pg_pool = pools[suffix]
                    app.state.lookups = None if name == UNCACHED_UNBATCHED else lookups[suffix]
                    batcher = lookups[suffix]
                    b0, k0 = batcher.batches, batcher.keys
                    p0 = cpu_seconds(cluster_pids(stack))  # backends started since: from 0
                    t0, w0 = time.process_time(), time.monotonic()
                    await each(paths, lambda path: call(app, path, headers))
                    cpu[name].append(1e6 * (time.process_time() - t0) / N)
                    wall[name].append(1e6 * (time.monotonic() - w0) / N)
                    if name in pg_cpu:
                        p1 = cpu_seconds(cluster_pids(stack))
                        pg = sum(v - p0.get(k, 0.0) for k, v in p1.items())
                        pg_cpu[name].append(1e6 * pg / N)
                    if name in batch_sizes and batcher.batches > b0:
                        batch_sizes[name].append((batcher.keys - k0) / (batcher.batches - b0))
                app.state.cache = cache
                app.state.pg_pool = pools[""]
                app.state.lookups = lookups[""]
                t0 = time.process_time()
                for i in range(N):
                    found = await service.find_by_identifier(
                        app.state.pg_pool,
                        TENANT,
                        "phone",
                        phone(i % CUSTOMERS),
                        phone_region="US",
                        kind="context",
                        cache=app.state.cache,
                    )
                    json_response(service.context_view(found, now=datetime.now(UTC), reveal=False))
                cpu["work_only"].append(1e6 * (time.process_time() - t0) / N)
                t0 = time.process_time()
                for i in range(N):
                    await service.screen_pop_card(
                        app.state.pg_pool,
                        TENANT,
                        "phone",
                        phone(i % CUSTOMERS),
                        phone_region="US",
                        cache=app.state.cache,
                    )
                cpu["card_only"].append(1e6 * (time.process_time() - t0) / N)
                # The floor of an uncached pop: one round trip on the same pool, and its statement
                for suffix, pool in pools.items():
                    t0, w0 = time.process_time(), time.monotonic()
                    await each(list(range(N)), lambda _, p=pool: p.fetchval("SELECT 1"))
                    cpu[f"db_select_1_only{suffix}"].append(1e6 * (time.process_time() - t0) / N)
                    wall[f"db_select_1_only{suffix}"].append(1e6 * (time.monotonic() - w0) / N)
                    t0, w0 = time.process_time(), time.monotonic()
                    await each(
                        list(range(N)),
                        lambda i, p=pool: repo.by_identifier(
                            p, TENANT, "phone", phone(i % CUSTOMERS)
                        ),
                    )
                    name = f"db_by_identifier_only{suffix}"
                    cpu[name].append(1e6 * (time.process_time() - t0) / N)
                    wall[name].append(1e6 * (time.monotonic() - w0) / N)
                background.append(await background_cpu_us_per_s())
            profiles = {}
            if PROFILE:
                for name in ("screen_pop_served", UNCACHED):
                    app.state.cache = None if name == UNCACHED else cache
                    profiles[name] = await profile(app, variants[name], headers)
                app.state.cache = cache
            statuses = {
                name: await call(app, paths[0], headers) for name, paths in variants.items()
            }
            if "_tcp" in pools:
                await pools["_tcp"].close()
                relay.terminate()
                relay.wait()
            memory = {  # what the warm cache holds: documents and their rendered cards
                "documents": len(cache._docs),
                "cards": len(cache._cards),
                "mean_document_bytes": round(
                    statistics.mean(len(d[1]) for d in cache._docs.values()) if cache._docs else 0
                ),
                "mean_card_bytes": round(
                    statistics.mean(len(c[1]) for c in cache._cards.values()) if cache._cards else 0
                ),
                "cache_bytes": cache._bytes,
            }
        medians = {k: round(statistics.median(v), 1) for k, v in cpu.items()}
        for name, us in medians.items():
            spread = f"{min(cpu[name]):.1f}-{max(cpu[name]):.1f}"
            print(f"{name:>28}: {us:7.1f} µs CPU per request (rounds {spread})")
        bare = medians["bare_healthz"]
        for name in (
            "screen_pop_served",
            "screen_pop_fastapi",
            "screen_pop_plain_starlette",
            UNCACHED,
            UNCACHED_UNBATCHED,
            *([UNCACHED_TCP] if UNCACHED_TCP in medians else []),
        ):
            print(f"{name}: bare/screen pop CPU ratio {bare / medians[name]:.2f}")
        walls = {k: round(statistics.median(v), 1) for k, v in wall.items()}
        idle = round(statistics.median(background), 1)
        print(f"wall µs per request (median; {CONCURRENCY} in flight): {walls}")
        print(f"background (no request): {idle} µs CPU per second")
        pg_medians = {k: round(statistics.median(v), 1) for k, v in pg_cpu.items() if v}
        for name, us in pg_medians.items():
            spread = f"{min(pg_cpu[name]):.1f}-{max(pg_cpu[name]):.1f}"
            print(f"{name:>28}: {us:7.1f} µs PostgreSQL CPU per request (rounds {spread})")
        mean_batch = {k: round(statistics.median(v), 2) for k, v in batch_sizes.items() if v}
        print(f"look-ups per statement, batched (median of rounds): {mean_batch}")
        print(f"context cache: {memory}")
        for name, text in profiles.items():
            print(f"\n--- profile of {N} requests: {name} ---\n{text}")
        return {
            "bench": "screen_pop_cpu",
            "cpu_us_per_request": medians,
            "rounds": cpu,
            "wall_us_per_request": walls,
            "postgres_cpu_us_per_request": pg_medians,
            "postgres_rounds": pg_cpu,
            "lookups_per_statement": mean_batch,
            "background_cpu_us_per_s": idle,
            "concurrency": CONCURRENCY,
            "context_cache": memory,
            "statuses": statuses,
            "healthz_vs_served_cpu_ratio": round(bare / medians["screen_pop_served"], 2),
            "healthz_vs_fastapi_cpu_ratio": round(bare / medians["screen_pop_fastapi"], 2),
            "healthz_vs_plain_cpu_ratio": round(bare / medians["screen_pop_plain_starlette"], 2),
            "healthz_vs_uncached_cpu_ratio": round(bare / medians[UNCACHED], 2),
            "healthz_vs_uncached_unbatched_cpu_ratio": round(bare / medians[UNCACHED_UNBATCHED], 2),
            "healthz_vs_uncached_tcp_cpu_ratio": (
                round(bare / medians[UNCACHED_TCP], 2) if UNCACHED_TCP in medians else None
            ),
            "postgres_via": "unix socket" if directory is not None else "tcp (DATABASE_URL)",
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(),
        }
    finally:
        stack.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
