"""Journey map benchmark (issue 8): one step log of >= 2,000,000 steps, built through the
journey worker's applier and the map compactor, then, ROUNDS times each:

(a) PM4Py ``discover_dfg`` + ``discover_performance_dfg`` on that log (pm4py is in the optional
    ``bench`` extra only: AGPL, never a runtime or test dependency);
(b) ``GET /v1/journey-map`` p50/p99, whole log and with a segment filter (a real uvicorn
    process, keep-alive load from another process) — target p99 <= 200 ms and >= 100x (a);
(c) the journey worker's throughput (Kafka -> worker process -> PostgreSQL) with map maintenance
    on vs off — target <= 15 % slower; for a "live" shape (events of the last hours) and a
    "replay" shape (months of history arriving at once);
(d) ``waypoint rebuild-maps`` steps/s (and the map it gives is the same; first round only);
(e) Waypoint's counts equal PM4Py's (edges, starts, ends, activities; mean durations).

Environment: BENCH_MAP_CUSTOMERS (200,000: 10 steps each), BENCH_MAP_ROUNDS (3),
BENCH_MAP_WORKER_CUSTOMERS (10,000 per throughput run), BENCH_MAP_ONLY=c (only (c), ROUNDS
times: no log is built), BENCH_MAP_SHAPES (``live,replay``: (c)'s shapes),
BENCH_MAP_COMPACTOR (``process``: with maintenance on, one ``waypoint worker journey maps``
process folds the map beside the worker; ``worker``: the worker folds it in-process, as before
that process existed; the maps process is started, and ready, before the worker).
(c) also reports CPU per event of the worker and of the maps process, from
the first stored event on; the worker's own rate (until every event is stored, the map perhaps
still behind) and how long after that the map was current (the maps process runs at a lower CPU
priority, ``WAYPOINT_JOURNEY_MAP_NICE``); the CPU of the PostgreSQL backends serving the maps
process; and the maps process's counters (customer visits, events, aggregate rows written,
batches). Prints figures, then one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _journey_stack import (  # noqa: E402
    ROOT,
    Stack,
    machine,
    new_producer,
    peak_rss_mb,
    run_load,
)
from _map_log import customer_events  # noqa: E402

from shared.auth.service import create_key, ensure_tenant  # noqa: E402
from shared.db import Database, asyncpg_dsn, raw_connection  # noqa: E402
from shared.embedded import free_port, wait_for_port  # noqa: E402
from shared.kafka import ensure_topics  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_MAP_CUSTOMERS", "200000"))
ROUNDS = int(os.environ.get("BENCH_MAP_ROUNDS", "3"))
WORKER_CUSTOMERS = int(os.environ.get("BENCH_MAP_WORKER_CUSTOMERS", "10000"))
ONLY = os.environ.get("BENCH_MAP_ONLY", "")
COMPACTOR = os.environ.get("BENCH_MAP_COMPACTOR", "process")
SHAPES = os.environ.get("BENCH_MAP_SHAPES", "live,replay").split(",")
# read before the stack exports its own DATABASE_URL: the bench configures only its own server
OWN_SERVER = not os.environ.get("DATABASE_URL")
TENANT = "bench-map"


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


async def build(stack: Stack, base: datetime) -> dict[str, Any]:
    """Two build processes (one customer range each) on the real applier and compactor."""
    started = time.perf_counter()
    half = CUSTOMERS // 2
    children = []
    for first, last in ((0, half), (half, CUSTOMERS)):
        spec = {
            "settings": {"database_url": stack.settings.dsn, "env": "test", "log_json": False},
            "base": base.isoformat(),
            "tenant": TENANT,
            "first": first,
            "last": last,
        }
        child = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_map_log.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        children.append((child, json.dumps(spec).encode()))
    outputs = await asyncio.gather(
        *(asyncio.to_thread(child.communicate, spec) for child, spec in children)
    )
    results = []
    for (child, _), (out, _err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, "build process failed"
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    seconds = time.perf_counter() - started
    return {"events": sum(r["events"] for r in results), "seconds": seconds}


async def step_log(db: Database) -> tuple[list[str], list[str], list[int]]:
    """The episode step log, journey by journey (the rows the export streams)."""
    async with db.session() as session:
        conn = await raw_connection(session)
        rows = await conn.fetch(
            """SELECT customer_id::text || '/' || journey_key, activities, times_us
               FROM journey.map_journey WHERE tenant_id = $1 AND kind = 1
               ORDER BY day, customer_id, journey_key""",
            TENANT,
        )
    cases: list[str] = []
    activities: list[str] = []
    times: list[int] = []
    for case, acts, ts in rows:
        cases.extend([case] * len(acts))
        activities.extend(acts)
        times.extend(ts)
    return cases, activities, times


def pm4py_dfg(cases: list[str], activities: list[str], times: list[int]) -> dict[str, Any]:
    import pandas as pd
    import pm4py

    frame = pd.DataFrame(
        {
            "case": cases,
            "activity": activities,
            "timestamp": pd.to_datetime(pd.Series(times, dtype="int64"), unit="us", utc=True),
        }
    )
    started = time.perf_counter()
    frame = pm4py.format_dataframe(
        frame, case_id="case", activity_key="activity", timestamp_key="timestamp"
    )
    formatted = time.perf_counter()
    dfg, starts, ends = pm4py.discover_dfg(frame)
    found = time.perf_counter()
    performance, _, _ = pm4py.discover_performance_dfg(frame)
    done = time.perf_counter()
    return {
        "format_s": formatted - started,
        "dfg_s": found - formatted,
        "performance_s": done - found,
        "seconds": done - formatted,
        "dfg": {f"{a}>{b}": n for (a, b), n in dfg.items()},
        "starts": dict(starts),
        "ends": dict(ends),
        "activities": dict(frame["concept:name"].value_counts()),
        "means": {f"{a}>{b}": v["mean"] for (a, b), v in performance.items()},
    }


def compare(body: dict[str, Any], pm: dict[str, Any]) -> dict[str, Any]:
    ours_edges = {f"{e['source']}>{e['target']}": e["count"] for e in body["edges"]}
    ours_means = {f"{e['source']}>{e['target']}": e["duration_s"]["mean"] for e in body["edges"]}
    checks = {
        "edges": ours_edges == pm["dfg"],
        "starts": {n["id"]: n["starts"] for n in body["nodes"] if n["starts"]} == pm["starts"],
        "ends": {n["id"]: n["ends"] for n in body["nodes"] if n["ends"]} == pm["ends"],
        "activities": {n["id"]: n["count"] for n in body["nodes"]}
        == {k: int(v) for k, v in pm["activities"].items()},
        "means": all(abs(ours_means[k] - v) <= 0.001 for k, v in pm["means"].items()),
    }
    assert all(checks.values()), f"Waypoint and PM4Py disagree: {checks}"
    return checks


async def latency(port: int, key: str, path: str) -> dict[str, Any]:
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "paths": [path],
        "headers": {"Authorization": f"Bearer {key}"},
        "concurrency": 2,
        "duration": 15,
        "rate": None,
    }
    return await asyncio.to_thread(run_load, spec)


async def checkpoint(dsn: str) -> None:
    """Start every throughput run just after a checkpoint, with checkpoints spaced as a
    production server's would be (``max_wal_size`` 8 GB: at PostgreSQL's default 1 GB the
    worker's ~15 MB/s of WAL forced one every ~30 s, each making the next change of every page
    write the whole page to the WAL; the same code's "on" runs then spread 6-43 % slower, at
    random). Only on the bench's own embedded server: a server named by DATABASE_URL is
    someone else's, its configuration is left alone (and said so)."""
    if not OWN_SERVER:
        print("  (DATABASE_URL: max_wal_size and checkpoints left as the server has them)")
        return
    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        await conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def wal_position(db: Database) -> int:
    """The server's WAL insert position, in bytes (all databases: the bench runs alone)."""
    async with db.session() as session:
        conn = await raw_connection(session)
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def worker_throughput(stack: Stack, *, maintenance: bool, shape: str) -> dict[str, Any]:
    """Events applied per second by one worker process from a pre-filled topic (and, with
    maintenance on, folded into the map: the run ends when the map has caught up)."""
    run = uuid.uuid4().hex[:6]
    tenant = f"bench-w{run}"
    topic = f"bench-map-{run}"
    await ensure_topics(stack.settings, [topic], partitions=4)
    now = datetime.now(UTC)
    base = now - (timedelta(days=4) if shape == "live" else timedelta(days=130))
    producer = new_producer(stack.settings)
    await producer.start()
    total = 0
    ids: list[str] = []
    try:
        futures = []
        for i in range(WORKER_CUSTOMERS):
            for event in customer_events(i, tenant, base):
                if shape == "live":  # squeeze the customer's steps into the last days
                    t = datetime.fromisoformat(event["time"])
                    event["time"] = (base + (t - base) / 40).isoformat()
                futures.append(
                    await producer.send(topic, orjson.dumps(event), key=f"{tenant}|m{i}".encode())
                )
                ids.append(event["id"])
                total += 1
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    # each partition's last event: the worker applies a partition in offset order, so once
    # they are all stored one count confirms the rest (a count of the tenant's events four
    # times a second took up to ~0.3 of a core by the end of a run: the probe must be cheap)
    last: dict[int, tuple[int, str]] = {}
    for meta, event_id in zip(sent, ids, strict=True):
        if meta.offset >= last.get(meta.partition, (-1, ""))[0]:
            last[meta.partition] = (meta.offset, event_id)
    probe = [event_id for _, event_id in last.values()]
    db = Database(stack.settings.dsn, pool_size=1, application_name="bench-watch")
    await checkpoint(stack.settings.dsn)
    env = {
        "WAYPOINT_TOPIC_NORMALIZED": topic,
        "WAYPOINT_JOURNEY_CONSUMER_GROUP": f"bench-map-{run}",
        "WAYPOINT_JOURNEY_MAP_MAINTENANCE": "true" if maintenance else "false",
        "WAYPOINT_JOURNEY_MAP_COMPACTOR_IN_WORKER": "true" if COMPACTOR == "worker" else "false",
    }
    metrics_port = free_port()
    maps = None
    if maintenance and COMPACTOR == "process":  # running before the worker, as in a deployment:
        # its start-up (imports, ~1.2 s CPU) is not counted as map work
        maps = stack.spawn(
            "worker", "journey", "maps", "--metrics-port", str(metrics_port), env=env
        )
        await asyncio.to_thread(wait_for_port, "127.0.0.1", metrics_port, 120)
    child = stack.spawn("worker", "journey", "worker", env=env)
    procs = [psutil.Process(child.pid)] + ([psutil.Process(maps.pid)] if maps else [])
    first = None
    stored_at = None  # every event stored (the worker's part done; the map may still lag)
    cpu0: list[float] = []
    wal0 = 0
    worker_cpu_stored = 0.0
    compaction: dict[str, float] = {}
    maps_pg = 0.0
    try:
        while True:
            async with db.session() as session:
                conn = await raw_connection(session)
                applied = (
                    total
                    if stored_at is not None
                    else await stored_events(conn, tenant, probe, first is None)
                )
                waiting = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM journey.map_pending WHERE tenant_id = $1)",
                    tenant,
                )
            if applied and first is None:
                first = (time.perf_counter(), applied)
                cpu0 = [cpu(p) for p in procs]
                wal0 = await wal_position(db)
            if applied >= total and stored_at is None:
                stored_at = time.perf_counter()
                worker_cpu_stored = cpu(procs[0]) - cpu0[0]
            if applied >= total and not waiting:
                break
            for p in (child, maps):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"a journey process exited with {p.returncode}")
            await asyncio.sleep(0.25)
        assert first is not None
        seconds = time.perf_counter() - first[0]
        used = [cpu(p) - c for p, c in zip(procs, cpu0, strict=True)]
        wal = await wal_position(db) - wal0
        peaks = [peak_rss_mb(p.pid) for p in procs]
        if maps is not None:
            compaction = await asyncio.to_thread(map_metrics, metrics_port)
            maps_pg = await backends_cpu(db, "journey-maps")
    finally:
        stack.stop(child)
        if maps is not None:
            stack.stop(maps)
        await db.dispose()
    events = total - first[1]
    assert stored_at is not None
    return {
        "events": total,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "stored_seconds": stored_at - first[0],
        "stored_events_per_s": events / (stored_at - first[0]),
        "worker_cpu_us_per_event_stored": 1e6 * worker_cpu_stored / events,
        "compaction": compaction,
        "worker_cpu_us_per_event": 1e6 * used[0] / events,
        "maps_cpu_us_per_event": 1e6 * used[1] / events if len(used) > 1 else 0.0,
        "maps_postgres_cpu_us_per_event": 1e6 * maps_pg / events,
        "wal_bytes_per_event": wal / events,
        "worker_peak_rss_mb": peaks[0],
        "maps_peak_rss_mb": peaks[1] if len(peaks) > 1 else 0.0,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def stored_events(
    conn: asyncpg.Connection, tenant: str, last: list[str], starting: bool
) -> int:
    """How many of the run's events the worker has stored, cheaply: before the first, whether
    any is (then how many); after it, 1 (some) until each partition's last event is stored,
    then a count."""
    if starting:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM journey.event WHERE tenant_id = $1)", tenant
        ):
            return 0
        return int(
            await conn.fetchval("SELECT count(*) FROM journey.event WHERE tenant_id = $1", tenant)
        )
    found = await conn.fetchval(
        "SELECT count(*) FROM journey.event WHERE tenant_id = $1 AND event_id = ANY($2::text[])",
        tenant,
        last,
    )
    if found < len(last):
        return 1
    return int(
        await conn.fetchval("SELECT count(*) FROM journey.event WHERE tenant_id = $1", tenant)
    )


def map_metrics(port: int) -> dict[str, float]:
    """The maps process's own counters: customer visits, events, aggregate rows, batches."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in (
                "waypoint_journey_map_customers_total",
                "waypoint_journey_map_events_total",
                "waypoint_journey_map_aggregate_writes_total",
                "waypoint_journey_map_batch_duration_seconds_count",
            ):
                label = next(iter(sample.labels.values()), "")
                out[f"{sample.name.removeprefix('waypoint_journey_map_')}:{label}"] = sample.value
    return out


async def backends_cpu(db: Database, application: str) -> float:
    """CPU seconds of the PostgreSQL backends serving ``application`` (since they started: the
    maps process's connections open with it, so its start-up's few queries are included)."""
    async with db.session() as session:
        conn = await raw_connection(session)
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application
        )
    total = 0.0
    for r in pids:
        try:
            total += cpu(psutil.Process(r[0]))
        except psutil.Error:
            pass
    return total


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def worker_round(stack: Stack) -> dict[str, Any]:
    """(c): both shapes, maintenance off then on; worker CPU per event beside the rates."""
    throughput: dict[str, Any] = {}
    for shape in SHAPES:
        off = await worker_throughput(stack, maintenance=False, shape=shape)
        on = await worker_throughput(stack, maintenance=True, shape=shape)
        throughput[shape] = {
            "off": off,
            "on": on,
            "slower": 1 - on["events_per_s"] / off["events_per_s"],
            "worker_cpu_more": on["worker_cpu_us_per_event"] / off["worker_cpu_us_per_event"] - 1,
            # the worker's own part: every event stored (the map may still be catching up)
            "stored_slower": 1 - on["stored_events_per_s"] / off["stored_events_per_s"],
            "map_behind_s": on["seconds"] - on["stored_seconds"],
        }
        log(
            f"  (c) worker, {shape}: off {off['events_per_s']:,.0f} events/s, on "
            f"{on['events_per_s']:,.0f} events/s (map current at the end): "
            f"{throughput[shape]['slower']:.0%} slower; worker CPU per event off "
            f"{off['worker_cpu_us_per_event']:.0f} µs, on {on['worker_cpu_us_per_event']:.0f} µs "
            f"({throughput[shape]['worker_cpu_more']:+.0%}), maps process "
            f"{on['maps_cpu_us_per_event']:.0f} µs (compactor: {COMPACTOR}), its PostgreSQL "
            f"backends {on['maps_postgres_cpu_us_per_event']:.0f} µs; WAL per event off "
            f"{off['wal_bytes_per_event']:,.0f} B, on {on['wal_bytes_per_event']:,.0f} B; "
            f"peak RSS worker {on['worker_peak_rss_mb']:.0f} MB, maps process "
            f"{on['maps_peak_rss_mb']:.0f} MB; load {on['load_average']}"
        )
        log(
            f"  (c) {shape}, worker's part alone (every event stored, map maybe behind): off "
            f"{off['stored_events_per_s']:,.0f} events/s, on {on['stored_events_per_s']:,.0f}: "
            f"{throughput[shape]['stored_slower']:.0%} slower; map "
            f"current {throughput[shape]['map_behind_s']:.1f} s after the last event stored; "
            f"maps process: {on['compaction']}"
        )
    return throughput


def summarize_worker(figures: dict[str, Any]) -> None:
    for shape in SHAPES:
        for name in ("slower", "worker_cpu_more", "stored_slower", "map_behind_s"):
            figures["summary"][f"worker_{shape}_{name}"] = spread(
                [r["worker"][shape][name] for r in figures["rounds"]]
            )


def rebuild() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "rebuild-maps", "--tenant", TENANT],
        capture_output=True,
        check=True,
        cwd=ROOT,
        env={**os.environ},
    )
    line = out.stdout.decode().strip().splitlines()[-1]
    # "bench-map: N customer(s), S step(s) from E event(s) in T s (R steps/s)"
    steps = int(line.split(", ")[1].split()[0])
    seconds = float(line.split(" in ")[1].split()[0])
    return {"steps": steps, "seconds": seconds, "steps_per_s": steps / seconds}


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


async def main() -> None:
    stack = Stack()
    figures: dict[str, Any] = {"machine": machine(), "customers": CUSTOMERS, "rounds": []}
    try:
        await stack.prepare()
        db = Database(stack.settings.dsn, pool_size=2, application_name="bench")
        async with db.session() as session:
            await ensure_tenant(session, TENANT)
            key, _ = await create_key(
                session, tenant_id=TENANT, name="bench", scopes=["analytics:read"]
            )
        os.environ.update({k: v for k, v in stack.env().items() if k.isupper()})
        if ONLY == "c":  # the worker's throughput alone: no log, no PM4Py, no API
            figures["summary"] = {}
            for round_no in range(1, ROUNDS + 1):
                log(f"round {round_no}: (c) only, {WORKER_CUSTOMERS:,} customers per run …")
                figures["rounds"].append({"worker": await worker_round(stack)})
            summarize_worker(figures)
            await db.dispose()
            print(json.dumps(figures, default=str))
            return
        base = datetime.now(UTC) - timedelta(days=130)
        log(f"building the step log: {CUSTOMERS:,} customers x 10 steps …")
        built = await build(stack, base)
        async with db.session() as session:
            conn = await raw_connection(session)
            steps = await conn.fetchval(
                "SELECT count(*) FROM journey.map_step WHERE tenant_id = $1", TENANT
            )
            sizes = {
                t: await conn.fetchval(
                    f"SELECT count(*) FROM journey.{t} WHERE tenant_id = $1",  # noqa: S608
                    TENANT,
                )
                for t in ("map_node", "map_edge", "map_journey")
            }
        built.update(steps=steps, rows=sizes)
        log(
            f"built: {built['events']:,} events, {steps:,} steps in {built['seconds']:.0f} s "
            f"({built['events'] / built['seconds']:,.0f} events/s incl. map); rows {sizes}"
        )
        assert steps >= 2_000_000 or CUSTOMERS < 200_000
        figures["build"] = built
        port = stack.serve()
        cases, activities, times = await step_log(db)
        segment = "/v1/journey-map?segment.age_group=25-34"
        for round_no in range(1, ROUNDS + 1):
            log(f"round {round_no}: PM4Py on {len(activities):,} steps …")
            pm = await asyncio.to_thread(pm4py_dfg, cases, activities, times)
            import httpx

            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
            ) as client:
                body = (await client.get("/v1/journey-map", timeout=60)).json()
            checks = compare(body, pm)
            log(
                f"  (a) PM4Py discover_dfg {pm['dfg_s']:.2f} s + discover_performance_dfg "
                f"{pm['performance_s']:.2f} s = {pm['seconds']:.2f} s (format_dataframe "
                f"{pm['format_s']:.2f} s more); (e) counts equal: {checks}"
            )
            whole = await latency(port, key, "/v1/journey-map")
            seg = await latency(port, key, segment)
            log(
                f"  (b) GET /v1/journey-map: p50 {whole['p50_ms']:.1f} ms, p99 "
                f"{whole['p99_ms']:.1f} ms ({whole['rps']:.0f} req/s); with a segment "
                f"filter: p50 {seg['p50_ms']:.1f} ms, p99 {seg['p99_ms']:.1f} ms; "
                f"PM4Py / p99 = {pm['seconds'] * 1000 / whole['p99_ms']:.0f}x"
            )
            if round_no == 1:  # minutes on 2M steps: once
                rebuilt = await asyncio.to_thread(rebuild)
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {key}"},
                ) as client:
                    again = (await client.get("/v1/journey-map", timeout=60)).json()
                assert again == body, "rebuild-maps changed the map"
                log(f"  (d) rebuild-maps: {rebuilt['steps_per_s']:,.0f} steps/s (same map)")
                figures["rebuild"] = rebuilt
            throughput = await worker_round(stack)
            figures["rounds"].append(
                {
                    "pm4py_s": pm["seconds"],
                    "pm4py_dfg_s": pm["dfg_s"],
                    "pm4py_performance_s": pm["performance_s"],
                    "api_p50_ms": whole["p50_ms"],
                    "api_p99_ms": whole["p99_ms"],
                    "api_segment_p50_ms": seg["p50_ms"],
                    "api_segment_p99_ms": seg["p99_ms"],
                    "speedup_vs_pm4py": pm["seconds"] * 1000 / whole["p99_ms"],
                    "worker": throughput,
                    "counts_equal": all(checks.values()),
                }
            )
        rounds = figures["rounds"]
        figures["summary"] = {
            name: spread([r[name] for r in rounds])
            for name in (
                "pm4py_s",
                "api_p50_ms",
                "api_p99_ms",
                "api_segment_p99_ms",
                "speedup_vs_pm4py",
            )
        }
        summarize_worker(figures)
        await db.dispose()
    finally:
        stack.close()
    print(json.dumps(figures, default=str))


if __name__ == "__main__":
    asyncio.run(main())
