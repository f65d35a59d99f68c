"""Journey: worker throughput and screen-pop latency, each against a raw limit in the same run.

1. Produce BENCH_CONTEXT_CUSTOMERS (100,000) simulated customers × 10 events to the normalized
   topic (as ingest would), then
   (a) raw limit: consume the whole topic without processing it (events/s);
   (b) the journey worker (``waypoint worker journey`` process): events/s until every event is
       applied (identity resolution, event store, context fold, activity published).
2. ``waypoint serve journey`` (one uvicorn process); a load generator in another process:
   (a) the bare endpoint of the same app (``/healthz``) and (b) ``GET /v1/context`` by phone
   (random customers), closed loop → max requests/s; then (c) the screen pop open loop at 70%
   of its max → p50/p99 (latency from the scheduled send time).
The cached run is warmed by reading each sampled customer once first (the
hot set: customers in contact right now); the uncached run is the cold, database-bound case.
Options by environment: BENCH_CONTEXT_CUSTOMERS, BENCH_CONTEXT_SECONDS (10),
BENCH_CONTEXT_CONCURRENCY (32), BENCH_CONTEXT_CACHE_MB (1024), BENCH_CONTEXT_SERVE_WORKERS (2).
Three API runs are measured: without the context cache (every look-up reads PostgreSQL), with
it, and with it in BENCH_CONTEXT_SERVE_WORKERS uvicorn processes. The 70% run is repeated three
times, each with its conditions (GC pauses and event-loop lag in the API process, autovacuum
runs, the journey worker's activity, load average, the load generator's CPU). Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import psutil  # noqa: E402

from bench._journey_stack import (  # noqa: E402
    Conditions,
    Stack,
    count_events,
    elapsed,
    machine,
    new_producer,
    peak_rss_mb,
    phone,
    produce_customers,
    run_load,
)
from shared.db import Database, asyncpg_dsn  # noqa: E402
from shared.kafka import make_consumer  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_CONTEXT_CUSTOMERS", "100000"))
SECONDS = float(os.environ.get("BENCH_CONTEXT_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONTEXT_CONCURRENCY", "32"))
CACHE_MB = int(os.environ.get("BENCH_CONTEXT_CACHE_MB", "1024"))
SERVE_WORKERS = int(os.environ.get("BENCH_CONTEXT_SERVE_WORKERS", "2"))
ROUNDS = 3


async def raw_consume(stack: Stack, total: int) -> float:
    consumer = make_consumer(
        stack.settings, stack.settings.topic_normalized, group_id=f"raw-{time.time_ns()}"
    )
    await consumer.start()
    try:
        seen, started = 0, time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            seen += sum(len(v) for v in batches.values())
        return seen / elapsed(started)
    finally:
        await consumer.stop()


async def measure(
    label: str, port: int, headers: dict[str, str], paths: list[str], dsn: str
) -> dict[str, Any]:
    base = {"host": "127.0.0.1", "port": port, "headers": headers}
    if label.startswith("cached"):  # warm: every customer of the sample looked up once before
        run_load({**base, "paths": paths, "concurrency": 8, "duration": len(paths) / 1500})
    else:
        run_load({**base, "paths": paths, "concurrency": 8, "duration": 3})  # warm up
    # Bare and screen pop alternate in short rounds (medians), so a noisy neighbour on this
    # shared machine hits both alike.
    bares, peaks = [], []
    for _ in range(ROUNDS):
        bares.append(
            run_load(
                {**base, "paths": ["/healthz"], "concurrency": CONCURRENCY, "duration": SECONDS / 2}
            )
        )
        peaks.append(
            run_load({**base, "paths": paths, "concurrency": CONCURRENCY, "duration": SECONDS / 2})
        )
    bare = sorted(bares, key=lambda r: r["rps"])[len(bares) // 2]
    peak = sorted(peaks, key=lambda r: r["rps"])[len(peaks) // 2]
    rounds_bare = ", ".join(f"{r['rps']:,.0f}" for r in bares)
    rounds_peak = ", ".join(f"{r['rps']:,.0f}" for r in peaks)
    print(f"[{label}] bare /healthz max (median): {bare['rps']:,.0f} req/s ({rounds_bare})")
    print(f"[{label}] screen pop max (median): {peak['rps']:,.0f} req/s ({rounds_peak})")
    # Latency at 70% of the screen pop's own maximum, three runs, each with its conditions.
    runs = []
    for n in range(ROUNDS):
        conditions = Conditions(port, dsn)
        await conditions.start()
        at70 = run_load(
            {
                **base,
                "paths": paths,
                "concurrency": CONCURRENCY,
                "duration": SECONDS,
                "rate": round(peak["rps"] * 0.7),
            }
        )
        at70["conditions"] = await conditions.stop()
        runs.append(at70)
        c = at70["conditions"]
        print(
            f"[{label}] at 70% run {n + 1} ({at70['target_rate']:,} req/s offered): "
            f"{at70['rps']:,.0f} req/s, p50 {at70['p50_ms']:.2f} ms, p99 {at70['p99_ms']:.2f} ms, "
            f"max {at70['max_ms']:.1f} ms | GC pauses {c['gc_pauses']} "
            f"({c['gc_pause_ms_total']} ms, {c['gc_pauses_over_5ms']} over 5 ms), loop lag "
            f"mean {c['loop_lag_mean_ms']} ms, {c['loop_lag_over_10ms']} over 10 ms, "
            f"autovacuum runs {c['autovacuum_runs']}, worker active "
            f"{c['journey_worker_active_at_start_end']}, load {c['load_average']}, "
            f"load generator {at70['client_cpu_us_per_request']} µs CPU/request"
        )
        bad = {k: v for k, v in at70["statuses"].items() if k != "200"}
        if bad or at70["errors"]:
            raise RuntimeError(f"non-200 answers under load: {bad}")
    bad = {k: v for k, v in peak["statuses"].items() if k != "200"}
    if bad or peak["errors"]:
        raise RuntimeError(f"non-200 answers under load: {bad}")
    p99s = [r["p99_ms"] for r in runs]
    # The machine's own tail at that rate: the bare endpoint offered the same load.
    bare_same = run_load(
        {
            **base,
            "paths": ["/healthz"],
            "concurrency": CONCURRENCY,
            "duration": SECONDS,
            "rate": runs[0]["target_rate"],
        }
    )
    print(
        f"[{label}] at 70%: p99 {', '.join(f'{p:.2f}' for p in p99s)} ms "
        f"(spread {min(p99s):.2f}-{max(p99s):.2f}; target <= 10 ms in 3 of 3: "
        f"{sum(p <= 10 for p in p99s)} of 3); bare /healthz at the same offered rate: "
        f"p50 {bare_same['p50_ms']:.2f} ms, p99 {bare_same['p99_ms']:.2f} ms"
    )
    ratio = peak["rps"] / bare["rps"]
    print(f"[{label}] screen pop / bare endpoint throughput: {ratio:.2f}x")
    return {
        "bare_rps": round(bare["rps"]),
        "bare_rps_rounds": [round(r["rps"]) for r in bares],
        "context_max_rps": round(peak["rps"]),
        "context_max_rps_rounds": [round(r["rps"]) for r in peaks],
        "context_vs_bare": round(ratio, 3),
        "at70_offered_rps": runs[0]["target_rate"],
        "at70_p50_ms": [round(r["p50_ms"], 2) for r in runs],
        "at70_p99_ms": [round(p, 2) for p in p99s],
        "at70_max_ms": [round(r["max_ms"], 1) for r in runs],
        "at70_conditions": [r["conditions"] for r in runs],
        "bare_same_rate_p50_ms": round(bare_same["p50_ms"], 2),
        "bare_same_rate_p99_ms": round(bare_same["p99_ms"], 2),
        "load_generator_cpu_us_per_request": peak["client_cpu_us_per_request"],
    }


async def main() -> dict[str, object]:
    stack = Stack()
    try:
        await stack.prepare()
        settings = stack.settings
        producer = new_producer(settings)
        await producer.start()
        started = time.perf_counter()
        total = await produce_customers(producer, settings.topic_normalized, CUSTOMERS)
        await producer.stop()
        produce_rate = total / elapsed(started)
        print(f"produced {total:,} events for {CUSTOMERS:,} customers: {produce_rate:,.0f}/s")

        raw_rate = await raw_consume(stack, total)
        print(f"(a) raw consume of the normalized topic: {raw_rate:,.0f} events/s")

        db = Database(settings.dsn, pool_size=1, application_name="bench-probe")
        worker = stack.spawn("worker", "journey")
        started = time.perf_counter()
        done = 0
        while done < total:
            await asyncio.sleep(2)
            done = await count_events(db)
            if worker.poll() is not None:
                raise RuntimeError(f"journey worker exited with {worker.returncode}")
        worker_rate = total / elapsed(started)
        result_rss = peak_rss_mb(worker.pid)
        print(
            f"(b) journey worker: {total:,} events applied at {worker_rate:,.0f} events/s "
            f"(peak RSS {result_rss} MB)"
        )
        stack.stop(worker)
        await db.dispose()
        # Steady state, as autovacuum would leave it, before measuring reads.
        conn = await asyncpg.connect(asyncpg_dsn(settings.dsn))
        await conn.execute("VACUUM (ANALYZE) journey.identifier, journey.customer, journey.context")
        await conn.execute("CHECKPOINT")
        await conn.close()

        headers = {"Authorization": f"Bearer {stack.key}"}
        rng = random.Random(7)
        paths = [
            f"/v1/context?identifier_type=phone&value=%2B{phone(rng.randrange(CUSTOMERS))[1:]}"
            for _ in range(20_000)
        ]
        result: dict[str, object] = {
            "bench": "journey_context",
            "customers": CUSTOMERS,
            "events": total,
            "raw_consume_events_per_s": round(raw_rate),
            "worker_events_per_s": round(worker_rate),
            "worker_vs_raw": round(worker_rate / raw_rate, 3),
            "worker_peak_rss_mb": result_rss,
            "concurrency": CONCURRENCY,
        }
        # Same app twice: the database on every look-up (cache off), then with the
        # NOTIFY-invalidated context cache sized for the whole working set.
        configs = [("uncached", "0", 1), ("cached", str(CACHE_MB), 1)]
        if SERVE_WORKERS > 1:
            configs.append((f"cached_{SERVE_WORKERS}_processes", str(CACHE_MB), SERVE_WORKERS))
        for label, cache_mb, processes in configs:
            server = stack.serve({"WAYPOINT_JOURNEY_CONTEXT_CACHE_MB": cache_mb}, processes)
            figures = await measure(label, server, headers, paths, settings.dsn)
            process = psutil.Process(stack.children[-1].pid)
            figures["server_peak_rss_mb"] = [
                peak_rss_mb(p.pid) for p in [process, *process.children()]
            ]
            print(f"[{label}] API peak RSS: {figures['server_peak_rss_mb']} MB")
            result.update({f"{label}_{k}": v for k, v in figures.items()})
            stack.stop(stack.children[-1])
        result["machine"] = machine()
        return result
    finally:
        stack.close()


if __name__ == "__main__":
    result = asyncio.run(main())
    print(json.dumps(result))
