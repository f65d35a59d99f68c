"""The whole pipeline as ``make run`` runs it: raw topic → ingest → journey → alerts (scored).

Set-up: ``waypoint run --no-demo`` in a fresh data folder (embedded PostgreSQL, the durable
broker on SeaweedFS, every API and background process under the supervisor, as ``make run``).
BENCH_PIPELINE_EVENTS (200,000) simulated events (the simulator's journeys, tenant ``default``)
are produced to the raw topic as fast as the broker takes them; the clock runs from the first
produce until every consumer group (ingest, journey, alerts, and journey's engagement consumer)
has committed everything, twice in a row. Sampled every second: each group's lag, and each
process's RSS (PostgreSQL, broker and object store summed over their processes); at the end,
each process's own peak (VmHWM, the largest of a label's processes) and each label's CPU per
event during the run (all its processes summed).

Raw limits in the same run: the same events' envelopes written by one asyncpg ``COPY`` into a
table of the event store's shape on the same PostgreSQL, and the broker's own delivery of the
raw topic to one plain consumer from offset 0. ``WAYPOINT_BROKER_STORAGE=memory`` runs the stack
on the in-memory broker instead (what production Kafka's fetch path is closer to); the JSON line
names the storage. ``BENCH_PIPELINE_LIMIT_S`` (7,200) bounds the wait. Figures, then one JSON
line.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402

from services.alerts.config import AlertsSettings  # noqa: E402
from services.drain import GroupProbe, groups_of  # noqa: E402
from services.ingest.config import IngestSettings  # noqa: E402
from services.journey.config import JourneySettings  # noqa: E402
from services.simulator.generator import generate_keyed  # noqa: E402
from services.simulator.producer import send  # noqa: E402
from services.simulator.records import plan  # noqa: E402
from services.stack import StackInfo  # noqa: E402
from shared.db import asyncpg_dsn  # noqa: E402
from shared.embedded import free_port  # noqa: E402
from shared.kafka import make_producer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVENTS = int(os.environ.get("BENCH_PIPELINE_EVENTS", "200000"))
TENANT = "default"  # `waypoint run` ensures it
LIMIT_S = float(os.environ.get("BENCH_PIPELINE_LIMIT_S", "7200"))
EVENTS_PER_CUSTOMER = 28  # the simulator's average over 30 days (measured)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_1m": round(os.getloadavg()[0], 1),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def label(process: psutil.Process) -> str | None:
    try:
        cmd = process.cmdline()
    except psutil.Error:
        return None
    joined = " ".join(cmd)
    if "services.cli" in joined:
        at = cmd.index("services.cli")
        rest = cmd[at + 1 :]
        if rest[:1] == ["worker"]:
            return f"{rest[1]}-{rest[2]}"
        if rest[:1] == ["serve"]:
            return f"{rest[1]}-api"
        return "supervisor"
    if "postgres" in joined:
        return "postgresql (all processes)"
    if "weed" in joined:
        return "seaweedfs"
    if "broker" in joined:
        return "tansu"
    return None


def postmaster(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL runs detached (pg_ctl): found by its pid file."""
    for pid_file in data_dir.rglob("postmaster.pid"):
        try:
            main = psutil.Process(int(pid_file.read_text().split("\n", 1)[0]))
            return [main, *main.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            continue
    return []


def rss_by_process(root: psutil.Process, data_dir: Path) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for process in [root, *root.children(recursive=True), *postmaster(data_dir)]:
        name = label(process)
        if name is None:
            continue
        try:
            sizes[name] += process.memory_info().rss
        except psutil.Error:
            continue
    return sizes


def vm_hwm(pid: int) -> int:
    """The process's own peak RSS (VmHWM: the kernel's high-water mark, not a 1 s sample)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def observe(root: psutil.Process, data_dir: Path, seen: dict[int, tuple[str, int, float]]) -> None:
    """Per process (by pid): its label, VmHWM and CPU seconds so far (kept after it exits)."""
    for process in [root, *root.children(recursive=True), *postmaster(data_dir)]:
        name = label(process)
        if name is None:
            continue
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        previous = seen.get(process.pid, (name, 0, 0.0))
        hwm = max(previous[1], vm_hwm(process.pid))
        seen[process.pid] = (name, hwm, max(previous[2], times.user + times.system))


def records(count: int) -> list[Any]:
    customers = count // EVENTS_PER_CUSTOMER + 1
    while True:
        found = list(
            plan(generate_keyed(customers=customers, seed=7, tenant=TENANT), seed=7, tenant=TENANT)
        )
        if len(found) >= count:
            return found[:count] if len(found) - count < EVENTS_PER_CUSTOMER * 4 else found
        customers = int(customers * count / max(1, len(found))) + 10


def start_stack(data_dir: Path) -> tuple[subprocess.Popen[bytes], StackInfo]:
    offset = free_port() % 20000 + 20000 - 8001
    env = {**os.environ, "WAYPOINT_DATA_DIR": str(data_dir), "WAYPOINT_LOG_LEVEL": "WARNING"}
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "services.cli", "run", "--no-demo", "--port-offset", str(offset)]
    argv += ["--broker-port", str(free_port())]
    log = (data_dir.parent / "run.log").open("ab")
    run = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if run.poll() is not None:
            raise RuntimeError(f"waypoint run exited: {(data_dir.parent / 'run.log').read_text()}")
        info = StackInfo.read(data_dir)
        text = (data_dir.parent / "run.log").read_text(errors="replace")
        if info is not None and "export KAFKA_BOOTSTRAP_SERVERS" in text:
            return run, info
        time.sleep(0.5)
    raise TimeoutError("the stack did not start in 600 s")


async def copy_baseline(dsn: str, rows: list[tuple[str, str, str]]) -> float:
    """Rows/s of one asyncpg COPY of the envelopes into a table of the event store's shape."""
    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.bench_copy (tenant_id varchar(64), "
            "event_id varchar(256), envelope jsonb, PRIMARY KEY (tenant_id, event_id))"
        )
        await conn.execute("TRUNCATE public.bench_copy")
        started = time.perf_counter()
        await conn.copy_records_to_table("bench_copy", records=rows, schema_name="public")
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE public.bench_copy")
        return len(rows) / elapsed
    finally:
        await conn.close()


async def broker_consume_rate(bootstrap: str, topic: str, count: int) -> float:
    """Records/s of one plain consumer reading ``topic`` from offset 0 (no group, no commits):
    the broker's own delivery rate of the same records, in the same run."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        got, started = 0, time.perf_counter()
        while got < count and time.perf_counter() - started < 600:
            fetched = await consumer.getmany(timeout_ms=500, max_records=5000)
            got += sum(len(batch) for batch in fetched.values())
        return got / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        return {
            "stored": await conn.fetchval(
                "SELECT count(*) FROM ingest.event WHERE tenant_id = $1", TENANT
            ),
            "applied": await conn.fetchval(
                "SELECT count(*) FROM journey.event WHERE tenant_id = $1", TENANT
            ),
            "scored": await conn.fetchval(
                "SELECT count(*) FROM alerts.processed_activity WHERE tenant_id = $1", TENANT
            ),
            "alerts": await conn.fetchval(
                "SELECT count(*) FROM alerts.alert WHERE tenant_id = $1", TENANT
            ),
        }
    finally:
        await conn.close()


async def measure(info: StackInfo, run: subprocess.Popen[bytes], data_dir: Path) -> dict[str, Any]:
    infra = {"database_url": info.database_url,
             "kafka_bootstrap_servers": info.kafka_bootstrap_servers}  # fmt: skip
    ingest = IngestSettings(**infra)
    groups = groups_of(
        {"ingest": ingest, "journey": JourneySettings(**infra), "alerts": AlertsSettings(**infra)}
    )
    made = time.perf_counter()
    batch = records(EVENTS)
    generated_s = time.perf_counter() - made
    print(f"  {len(batch):,} events generated in {generated_s:.0f} s", flush=True)  # noqa: T201
    probes = [GroupProbe(info.kafka_bootstrap_servers, g) for g in groups]
    root = psutil.Process(run.pid)
    peak: dict[str, int] = defaultdict(int)
    per_process: dict[int, tuple[str, int, float]] = {}
    observe(root, data_dir, per_process)
    cpu_before = {pid: cpu for pid, (_, _, cpu) in per_process.items()}
    lags: list[dict[str, Any]] = []
    producer = make_producer(ingest)
    await producer.start()
    started = time.perf_counter()
    produced_at: list[float] = []

    async def produce() -> None:
        await send(producer, ingest.topic_raw, batch)
        produced_at.append(time.perf_counter() - started)

    sending = asyncio.create_task(produce())
    for probe in probes:
        await probe.start()
    drained_at: dict[str, float] = {}
    zero_rounds = 0
    try:
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter() - started
            sample = {p.group.service: await p.lag() for p in probes}
            lags.append({"t": round(now, 1), **sample})
            if len(lags) % 10 == 1:
                print(f"  lag at {now:>7.1f} s: {sample}", flush=True)  # noqa: T201
            for name, size in rss_by_process(root, data_dir).items():
                peak[name] = max(peak[name], size)
            observe(root, data_dir, per_process)
            if not sending.done():
                continue
            for name, lag in sample.items():
                if lag == 0:
                    drained_at.setdefault(name, now)
                else:
                    drained_at.pop(name, None)
            zero_rounds = zero_rounds + 1 if not any(sample.values()) else 0
            if zero_rounds >= 2:
                break
            if now > LIMIT_S:
                raise TimeoutError(f"not drained after {LIMIT_S} s: {sample}")
    finally:
        for probe in probes:
            await probe.stop()
        await producer.stop()
    total_s = max(drained_at.values())
    observe(root, data_dir, per_process)
    hwm_mb: dict[str, int] = defaultdict(int)
    cpu_s: dict[str, float] = defaultdict(float)
    for pid, (name, hwm, cpu) in per_process.items():
        if not name.startswith("postgresql"):
            hwm_mb[name] = max(hwm_mb[name], round(hwm / 2**20))
        cpu_s[name] += cpu - cpu_before.get(pid, 0.0)
    found = await counts(info.database_url)
    envelopes = [
        (TENANT, f"copy-{i}", r.value.decode(errors="replace")) for i, r in enumerate(batch)
    ]
    copy_rate = await copy_baseline(info.database_url, [e for e in envelopes if e[2][:1] == "{"])
    broker_rate = await broker_consume_rate(
        info.kafka_bootstrap_servers, ingest.topic_raw, len(batch)
    )
    rate = len(batch) / total_s
    return {
        "events": len(batch),
        "generated_s": round(generated_s, 1),
        "seconds": round(total_s, 1),
        "produced_s": round(produced_at[0], 1),
        "events_per_s": round(rate),
        "stage_drained_s": {k: round(v, 1) for k, v in drained_at.items()},
        "counts": found,
        "copy_rows_per_s": round(copy_rate),
        "ratio_to_copy": round(rate / copy_rate, 3),
        "broker": os.environ.get("WAYPOINT_BROKER_STORAGE", "s3"),
        "broker_consume_per_s": round(broker_rate),
        "ratio_to_broker_consume": round(rate / broker_rate, 3),
        "peak_rss_mb": {k: round(v / 2**20) for k, v in sorted(peak.items())},
        "peak_rss_per_process_mb": dict(sorted(hwm_mb.items())),
        "cpu_us_per_event": {k: round(v * 1e6 / len(batch)) for k, v in sorted(cpu_s.items())},
        "lag_every_10s": lags[::10],
    }


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="waypoint-bench-pipeline-"))
    run, info = start_stack(workdir / "data")
    try:
        result = asyncio.run(measure(info, run, workdir / "data"))
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=180)
        except subprocess.TimeoutExpired:
            run.kill()
    result["machine"] = machine()
    print(f"pipeline, raw → scored in alerts: {result['events']:,} events")  # noqa: T201
    print(f"  sustained: {result['events_per_s']:,} events/s ({result['seconds']} s)")  # noqa: T201
    print(f"  each group drained at (s): {result['stage_drained_s']}")  # noqa: T201
    print(f"  raw asyncpg COPY, same run: {result['copy_rows_per_s']:,} rows/s; "  # noqa: T201
          f"ratio {result['ratio_to_copy']}")  # fmt: skip
    broker = f"{result['broker_consume_per_s']:,} records/s"
    print(f"  the broker's own consume of the raw topic ({result['broker']} storage), "  # noqa: T201
          f"same run: {broker}; ratio {result['ratio_to_broker_consume']}")  # fmt: skip
    print(f"  counts: {result['counts']}")  # noqa: T201
    print(f"  peak RSS (MB): {result['peak_rss_mb']}")  # noqa: T201
    print(f"  largest VmHWM of one process (MB): {result['peak_rss_per_process_mb']}")  # noqa: T201
    print(f"  CPU per event, during the run (µs): {result['cpu_us_per_event']}")  # noqa: T201
    print(json.dumps({"bench": "pipeline", **result}))  # noqa: T201


if __name__ == "__main__":
    main()
