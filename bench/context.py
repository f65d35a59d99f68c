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
Options by environment:
- BENCH_CONTEXT_CUSTOMERS (100,000), BENCH_CONTEXT_CACHE_MB (1024),
  BENCH_CONTEXT_CONCURRENCY (32 connections), BENCH_CONTEXT_SERVE_WORKERS (2);
- BENCH_CONTEXT_MAX_SECONDS (12): each of the three closed-loop rounds of a max (bare and
  screen pop alternate) lasts this long, so the max is a sustained rate, not a burst;
- BENCH_CONTEXT_SECONDS (10): each open-loop run at 70 %;
- BENCH_CONTEXT_PIN ("", e.g. "0:1"): ``API_CPUS:LOAD_CPU``, the API's processes on those CPUs
  and the load generator on the other (PostgreSQL and neighbours are not pinned);
- BENCH_CONTEXT_NICE (0, e.g. -15, root only): the bench in a session of its own whose
  scheduler autogroup, and the API's processes, the load generator and this bench's embedded
  PostgreSQL and broker, get that nice value; on a machine shared with other sessions this
  takes the neighbours' CPU contention out of the figures (a process's nice value alone does
  not: with autogroups the CPU is shared between sessions first);
- BENCH_CONTEXT_CONFIGS (all): e.g. "cached" to measure only that configuration;
  "uncached_unbatched" (only when named) is the uncached one with its look-ups not batched
  (WAYPOINT_JOURNEY_CONTEXT_LOOKUP_BATCH_MAX=0); a name given twice is measured twice, in the
  order given (e.g. "uncached_unbatched,uncached,uncached_unbatched,uncached": A/B/A/B);
- BENCH_CONTEXT_WRK (1): when ``wrk`` is installed, re-measure both maxima with it as a
  cross-check (its CPU per request is the C floor); "0" skips it. Not needed for the figures.
Three API runs are measured: without the context cache (every look-up reads PostgreSQL), with
it, and with it in BENCH_CONTEXT_SERVE_WORKERS uvicorn processes. The 70% run is repeated three
times, each with its conditions (GC pauses and event-loop lag in the API process, autovacuum
runs, the journey worker's activity, load average, the load generator's CPU) and where its tail
is: the client's p99 (from the due time) beside the API middleware's own time for the same
requests (``waypoint_http_request_duration_seconds``: p99 as a bucket bound, counts over
10/25/50 ms), the API's CPU per request, and the generator's own lateness (how late it sent
requests that found a free connection) and queue. The bare endpoint gets the same split at the
same offered rate. Each max round also gives the API's and the PostgreSQL cluster's CPU per
request. With the uncached configuration the raw limit is measured in the same rounds:
``bench/_raw_row_app.py`` (a bare ASGI app on uvicorn, one asyncpg fetch of one row by primary
key per request, and the same app's answer without the read). Last line: JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
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
    cluster_pids,
    cpu_seconds,
    elapsed,
    machine,
    peak_rss_mb,
    phone,
    run_load,
    wait_stored,
    wrk_max,
)
from shared.db import Database, asyncpg_dsn  # noqa: E402
from shared.embedded import free_port, wait_for_port  # noqa: E402
from shared.kafka import make_consumer  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_CONTEXT_CUSTOMERS", "100000"))
SECONDS = float(os.environ.get("BENCH_CONTEXT_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONTEXT_CONCURRENCY", "32"))
CACHE_MB = int(os.environ.get("BENCH_CONTEXT_CACHE_MB", "1024"))
SERVE_WORKERS = int(os.environ.get("BENCH_CONTEXT_SERVE_WORKERS", "2"))
# Each closed-loop round of the max lasts this long: a sustained rate, not a burst.
MAX_SECONDS = float(os.environ.get("BENCH_CONTEXT_MAX_SECONDS", "12"))
# "API_CPUS:LOAD_CPU" (e.g. "0:1"): pin the API's processes and the load generator apart, to
# tell which one stalls. Off by default (PostgreSQL and the neighbours are never pinned).
PIN = os.environ.get("BENCH_CONTEXT_PIN", "")
# wrk (C) re-measures both maxima as a cross-check when installed; "0": skip.
WRK = os.environ.get("BENCH_CONTEXT_WRK", "1") != "0"
# A negative nice value (root only) for the API's processes, the load generator and the
# embedded PostgreSQL and broker: on a machine shared with other work, it takes the
# neighbours' CPU contention out of the figures. 0: as scheduled.
NICE = int(os.environ.get("BENCH_CONTEXT_NICE", "0"))
# Which API configurations to measure (comma-separated): uncached, cached, cached_N_processes.
CONFIGS = os.environ.get("BENCH_CONTEXT_CONFIGS", "")
ROUNDS = 3


def pin(server_pid: int) -> int | None:
    """Pin the API (and its uvicorn children) per BENCH_CONTEXT_PIN, renice them per
    BENCH_CONTEXT_NICE; the generator's CPU."""
    process = psutil.Process(server_pid)
    if NICE:
        for p in [process, *process.children(recursive=True)]:
            p.nice(NICE)
    if not PIN:
        return None
    api, load = PIN.split(":")
    cpus = [int(c) for c in api.split(",")]
    for p in [process, *process.children(recursive=True)]:
        p.cpu_affinity(cpus)
    return int(load)


def renice_infrastructure(stack: Stack) -> None:
    """PostgreSQL and the broker of this bench (and their children) at BENCH_CONTEXT_NICE."""
    if not NICE:
        return
    for p in psutil.process_iter(["cmdline"]):
        if str(stack.tmp) in " ".join(p.info["cmdline"] or []):
            for q in [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    q.nice(NICE)


class CpuMeter:
    """Process CPU of the server's processes and of the PostgreSQL cluster's (backends that
    started during the window counted from zero) over one load run, per answered request."""

    def __init__(self, server: list[int], stack: Stack | None) -> None:
        self.server, self.stack = server, stack

    def start(self) -> None:
        self.s0 = cpu_seconds(self.server)
        self.p0 = cpu_seconds(cluster_pids(self.stack)) if self.stack else {}

    def stop(self, requests: int) -> dict[str, float | None]:
        s1 = cpu_seconds(self.server)
        p1 = cpu_seconds(cluster_pids(self.stack)) if self.stack else {}
        n = max(requests, 1)
        server = sum(v - self.s0.get(k, 0.0) for k, v in s1.items())
        pg = sum(v - self.p0.get(k, 0.0) for k, v in p1.items())
        return {
            "server_cpu_us_per_request": round(1e6 * server / n, 1),
            "postgres_cpu_us_per_request": round(1e6 * pg / n, 1) if p1 else None,
        }


def metered(spec: dict[str, Any], meter: CpuMeter) -> dict[str, Any]:
    meter.start()
    result = run_load(spec)
    result.update(meter.stop(result["requests"]))
    return result


def cpu_note(r: dict[str, Any]) -> str:
    return (
        f"{r['server_cpu_us_per_request']} µs API CPU + "
        f"{r['postgres_cpu_us_per_request']} µs PostgreSQL CPU per request"
    )


def server_pids(server_pid: int) -> list[int]:
    process = psutil.Process(server_pid)
    return [process.pid, *(p.pid for p in process.children(recursive=True))]


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
    label: str,
    port: int,
    headers: dict[str, str],
    paths: list[str],
    dsn: str,
    server_pid: int,
    stack: Stack | None = None,
    raw: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """``raw``: (port, pid) of ``bench/_raw_row_app.py``, whose maxima (one row by primary key
    per request, and its bare answer) alternate with the bare endpoint's and the screen pop's."""
    base = {
        "host": "127.0.0.1",
        "port": port,
        "headers": headers,
        "cpu": pin(server_pid),
        "nice": NICE or None,
    }
    pids = server_pids(server_pid)
    if label.startswith("cached"):  # warm: every customer of the sample looked up once before
        run_load({**base, "paths": paths, "concurrency": 8, "duration": len(paths) / 1500})
    else:
        run_load({**base, "paths": paths, "concurrency": 8, "duration": 3})  # warm up
    # Bare and screen pop alternate in short rounds (medians), so a noisy neighbour on this
    # shared machine hits both alike.
    meter = CpuMeter(pids, stack)
    closed = {"concurrency": CONCURRENCY, "duration": MAX_SECONDS}
    bares, peaks, raw_rows, raw_bares = [], [], [], []
    if raw is not None:
        raw_base = {**base, "port": raw[0], "headers": {}}
        raw_meter = CpuMeter([raw[1]], stack)
    for _ in range(ROUNDS):
        bares.append(metered({**base, "paths": ["/healthz"], **closed}, meter))
        peaks.append(metered({**base, "paths": paths, **closed}, meter))
        if raw is not None:
            raw_rows.append(metered({**raw_base, "paths": ["/row"], **closed}, raw_meter))
            raw_bares.append(metered({**raw_base, "paths": ["/bare"], **closed}, raw_meter))
    bare = sorted(bares, key=lambda r: r["rps"])[len(bares) // 2]
    peak = sorted(peaks, key=lambda r: r["rps"])[len(peaks) // 2]
    rounds_bare = ", ".join(f"{r['rps']:,.0f}" for r in bares)
    rounds_peak = ", ".join(f"{r['rps']:,.0f}" for r in peaks)
    print(
        f"[{label}] bare /healthz max (median): {bare['rps']:,.0f} req/s ({rounds_bare}); "
        f"{cpu_note(bare)}"
    )
    print(
        f"[{label}] screen pop max (median): {peak['rps']:,.0f} req/s ({rounds_peak}); "
        f"{cpu_note(peak)} (rounds: API {[r['server_cpu_us_per_request'] for r in peaks]}, "
        f"PostgreSQL {[r['postgres_cpu_us_per_request'] for r in peaks]})"
    )
    raw_figures: dict[str, Any] = {}
    if raw is not None:
        for name, runs_ in (("row", raw_rows), ("bare", raw_bares)):
            mid = sorted(runs_, key=lambda r: r["rps"])[len(runs_) // 2]
            rounds = ", ".join(f"{r['rps']:,.0f}" for r in runs_)
            print(
                f"[{label}] raw limit, bench ASGI app /{name} "
                f"({'one row by primary key per request' if name == 'row' else 'no read'}) "
                f"max (median): {mid['rps']:,.0f} req/s "
                f"({rounds}); {cpu_note(mid)}; "
                f"ratio to the journey app's bare /healthz {mid['rps'] / bare['rps']:.2f}x"
            )
            raw_figures[f"raw_{name}_rps"] = round(mid["rps"])
            raw_figures[f"raw_{name}_rps_rounds"] = [round(r["rps"]) for r in runs_]
            raw_figures[f"raw_{name}_vs_bare"] = round(mid["rps"] / bare["rps"], 3)
            raw_figures[f"raw_{name}_cpu"] = {
                k: mid[k] for k in ("server_cpu_us_per_request", "postgres_cpu_us_per_request")
            }
    print(
        f"[{label}] load generator at max: {peak['client_cpu_us_per_request']} µs CPU/request, "
        f"{peak['client_cpu_share']:.2f} of a core"
    )
    # Cross-check with a C generator when installed (its CPU per request is the floor).
    wrk: dict[str, Any] = {}
    if WRK:
        for name, p in (("bare", ["/healthz"]), ("context", paths)):
            got = wrk_max({**base, "paths": p, "concurrency": CONCURRENCY, "duration": MAX_SECONDS})
            if got is None:
                print(f"[{label}] wrk not installed: no cross-check of the max")
                break
            wrk[name] = got
            print(
                f"[{label}] wrk max, {name}: {got['rps']:,.0f} req/s, "
                f"{got['cpu_us_per_request']} µs CPU/request, non-2xx {got['non_2xx']}"
            )
    # Latency at 70% of the screen pop's own maximum, three runs, each with its conditions.
    runs = []
    for n in range(ROUNDS):
        conditions = Conditions(port, dsn, "/v1/context", pids)
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
        print(f"[{label}] at 70% run {n + 1}, where the tail is: " + split(at70, c))
        bad = {k: v for k, v in at70["statuses"].items() if k != "200"}
        if bad or at70["errors"]:
            raise RuntimeError(f"non-200 answers under load: {bad}")
    bad = {k: v for k, v in peak["statuses"].items() if k != "200"}
    if bad or peak["errors"]:
        raise RuntimeError(f"non-200 answers under load: {bad}")
    p99s = [r["p99_ms"] for r in runs]
    # The machine's own tail at that rate: the bare endpoint offered the same load.
    conditions = Conditions(port, dsn, "/healthz", pids)
    await conditions.start()
    bare_same = run_load(
        {
            **base,
            "paths": ["/healthz"],
            "concurrency": CONCURRENCY,
            "duration": SECONDS,
            "rate": runs[0]["target_rate"],
        }
    )
    bare_same["conditions"] = await conditions.stop()
    print(
        f"[{label}] bare /healthz at the same rate, where the tail is: "
        + split(bare_same, bare_same["conditions"])
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
        "bare_cpu_at_max": {
            k: bare[k] for k in ("server_cpu_us_per_request", "postgres_cpu_us_per_request")
        },
        "context_cpu_at_max": {
            k: peak[k] for k in ("server_cpu_us_per_request", "postgres_cpu_us_per_request")
        },
        "context_cpu_at_max_rounds": [
            [r["server_cpu_us_per_request"], r["postgres_cpu_us_per_request"]] for r in peaks
        ],
        **raw_figures,
        "at70_offered_rps": runs[0]["target_rate"],
        "at70_p50_ms": [round(r["p50_ms"], 2) for r in runs],
        "at70_p99_ms": [round(p, 2) for p in p99s],
        "at70_max_ms": [round(r["max_ms"], 1) for r in runs],
        "at70_conditions": [r["conditions"] for r in runs],
        "bare_same_rate_p50_ms": round(bare_same["p50_ms"], 2),
        "bare_same_rate_p99_ms": round(bare_same["p99_ms"], 2),
        "at70_split": [tail_split(r, r["conditions"]) for r in runs],
        "bare_same_rate_split": tail_split(bare_same, bare_same["conditions"]),
        "at70_per_second": [r["per_second"] for r in runs],
        "load_generator_cpu_us_per_request": peak["client_cpu_us_per_request"],
        "load_generator_cpu_us_per_request_at70": [r["client_cpu_us_per_request"] for r in runs],
        "load_generator_cpu_share_at_max": peak["client_cpu_share"],
        "wrk_max": wrk or None,
        "max_seconds": MAX_SECONDS,
        "pinned": PIN or None,
        "nice": NICE,
    }


def tail_split(load: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """Client-side vs server-side: the client's latency (from the due time) against the time
    the API's middleware saw, the generator's own lateness and the API's loop lag."""
    return {
        "client_p99_ms": round(load["p99_ms"], 2),
        "client_over_ms": load["over_ms"],
        "server_p99_ms_at_most": c["server_p99_ms_at_most"],
        "server_mean_ms": c["server_mean_ms"],
        "server_over_ms": c["server_over_ms"],
        "server_cpu_us_per_request": round(1e6 * c["server_cpu_s"] / max(load["requests"], 1), 1),
        "server_histograms": c["histograms"],
        "api_key_lookups": c["api_key_lookups"],
        "api_loop_lag_over_10ms": c["loop_lag_over_10ms"],
        "api_loop_lag_over_100ms": c["loop_lag_over_100ms"],
        "generator_send_late_p99_ms": load["send_late_p99_ms"],
        "generator_send_late_max_ms": load["send_late_max_ms"],
        "generator_queued": load["queued"],
        "generator_cpu_us_per_request": load["client_cpu_us_per_request"],
        "load_average": c["load_average"],
    }


def split(load: dict[str, Any], c: dict[str, Any]) -> str:
    t = tail_split(load, c)
    if c["histograms"] != "one process":
        return (
            f"client p99 {t['client_p99_ms']} ms (over 10/25/50 ms: "
            f"{'/'.join(str(v) for v in t['client_over_ms'].values())}), server-side time n/a "
            f"(several processes), API {t['server_cpu_us_per_request']} µs CPU/request, "
            f"generator late p99 {t['generator_send_late_p99_ms']} ms / max "
            f"{t['generator_send_late_max_ms']} ms, queued {t['generator_queued']}"
        )
    return (
        f"client p99 {t['client_p99_ms']} ms (over 10/25/50 ms: "
        f"{'/'.join(str(v) for v in t['client_over_ms'].values())}), server p99 <= "
        f"{t['server_p99_ms_at_most']} ms (mean {t['server_mean_ms']} ms, over 10/25/50 ms: "
        f"{'/'.join(str(v) for v in t['server_over_ms'].values())}, "
        f"{t['server_cpu_us_per_request']} µs CPU/request, API-key look-ups "
        f"{t['api_key_lookups']}), API loop lag over 10 ms "
        f"{t['api_loop_lag_over_10ms']}, generator late p99 {t['generator_send_late_p99_ms']} "
        f"ms / max {t['generator_send_late_max_ms']} ms, queued {t['generator_queued']}"
    )


def own_autogroup() -> str:
    """With BENCH_CONTEXT_NICE: this bench in a session of its own, and that session's
    scheduler autogroup at the same nice value. Linux shares the CPU between autogroups
    (sessions) first, so a process's own nice value counts only against its own session's
    processes; the autogroup's counts against the neighbours'."""
    if not NICE:
        return "off"
    with contextlib.suppress(PermissionError):
        os.setsid()  # not possible for a process-group leader: then the caller's session
    autogroup = Path("/proc/self/autogroup")
    if not autogroup.exists():
        return "no autogroups"
    try:
        autogroup.write_text(str(NICE))
    except OSError as exc:
        return f"autogroup not reniced: {exc}"
    return autogroup.read_text().strip()


async def main() -> dict[str, object]:
    print(f"scheduling: nice {NICE}, autogroup {own_autogroup()}, pinned {PIN or 'no'}")
    stack = Stack()
    try:
        await stack.prepare()
        settings = stack.settings
        started = time.perf_counter()
        total = await stack.produce_backlog(CUSTOMERS)
        produce_rate = total / elapsed(started)
        print(f"produced {total:,} events for {CUSTOMERS:,} customers: {produce_rate:,.0f}/s")

        raw_rate = await raw_consume(stack, total)
        print(f"(a) raw consume of the normalized topic: {raw_rate:,.0f} events/s")

        db = Database(settings.dsn, pool_size=1, application_name="bench-probe")
        worker = stack.spawn("worker", "journey")
        started = time.perf_counter()
        await wait_stored(db, total, worker, every=2)
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
        renice_infrastructure(stack)
        if CONFIGS:
            # uncached_unbatched (only when named): one statement per look-up, as before the
            # look-ups were batched (WAYPOINT_JOURNEY_CONTEXT_LOOKUP_BATCH_MAX=0)
            wanted = CONFIGS.split(",")
            known = [*configs, ("uncached_unbatched", "0", 1)]
            configs = [c for name in wanted for c in known if c[0] == name]
        seen: dict[str, int] = {}
        for name, cache_mb, processes in configs:
            # a configuration named twice (A/B/A/B) is reported as name, name_2, …
            seen[name] = seen.get(name, 0) + 1
            label = name if seen[name] == 1 else f"{name}_{seen[name]}"
            env = {"WAYPOINT_JOURNEY_CONTEXT_CACHE_MB": cache_mb}
            if name == "uncached_unbatched":
                env["WAYPOINT_JOURNEY_CONTEXT_LOOKUP_BATCH_MAX"] = "0"
            server = stack.serve(env, processes)
            server_process = stack.children[-1]
            raw = None
            if name.startswith("uncached"):  # the raw limit, alternated in the same run
                raw_port = free_port()
                raw_process = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("_raw_row_app.py")),
                     str(raw_port)],
                    env=stack.env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                stack.children.append(raw_process)
                wait_for_port("127.0.0.1", raw_port, timeout=120)
                raw = (raw_port, raw_process.pid)
            figures = await measure(
                label, server, headers, paths, settings.dsn, server_process.pid, stack, raw
            )
            process = psutil.Process(server_process.pid)
            figures["server_peak_rss_mb"] = [
                peak_rss_mb(p.pid) for p in [process, *process.children()]
            ]
            print(f"[{label}] API peak RSS: {figures['server_peak_rss_mb']} MB")
            result.update({f"{label}_{k}": v for k, v in figures.items()})
            stack.stop(server_process)
            if raw is not None:
                stack.stop(raw_process)
        result["machine"] = machine()
        return result
    finally:
        stack.close()


if __name__ == "__main__":
    result = asyncio.run(main())
    print(json.dumps(result))
