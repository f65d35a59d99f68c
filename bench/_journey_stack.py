"""Shared set-up of the journey benches: infrastructure, simulated customers, processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaProducer

from services.journey.config import JourneySettings
from shared.auth.service import create_key, ensure_tenant
from shared.db import Database
from shared.embedded import Infrastructure, free_port, wait_for_port
from shared.kafka import ensure_topics, make_producer
from shared.migrations import upgrade

ROOT = Path(__file__).resolve().parents[1]
TENANT = "bench"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "note": "2 cores, 24 GiB, shared with other engineers' work",
    }


class Stack:
    """Embedded PostgreSQL + broker unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="waypoint-bench-"))
        self.children: list[subprocess.Popen[bytes]] = []
        self.infra = Infrastructure.start(
            self.tmp,
            database_url=os.environ.get("DATABASE_URL"),
            kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
        )
        dsn, bootstrap = self.infra.database_url, self.infra.kafka_bootstrap_servers
        run = uuid.uuid4().hex[:6]
        self.settings = JourneySettings(
            database_url=dsn,
            kafka_bootstrap_servers=bootstrap,
            env="test",
            log_json=False,
            topic_raw=f"bench-{run}.raw",
            topic_normalized=f"bench-{run}.normalized",
            topic_dead_letter=f"bench-{run}.deadletter",
            topic_activity=f"bench-{run}.activity",
            topic_partitions=4,
            consumer_group=f"bench-journey-{run}",
        )
        self.key = ""

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "DATABASE_URL": s.dsn,
            "KAFKA_BOOTSTRAP_SERVERS": s.bootstrap_servers,
            "WAYPOINT_ENV": "test",
            "WAYPOINT_LOG_LEVEL": "WARNING",
            "WAYPOINT_TOPIC_NORMALIZED": s.topic_normalized,
            "WAYPOINT_TOPIC_ACTIVITY": s.topic_activity,
            "WAYPOINT_TOPIC_DEAD_LETTER": s.topic_dead_letter,
            "WAYPOINT_TOPIC_RAW": s.topic_raw,
            "WAYPOINT_JOURNEY_CONSUMER_GROUP": s.consumer_group,
            # one key does thousands of screen pops a second here: counted, never refused
            "WAYPOINT_RATE_LIMIT_KEY_READS": "1000000000",
            "WAYPOINT_RATE_LIMIT_TENANT_READS": "1000000000",
        }

    async def prepare(self) -> None:
        db = Database(self.settings.dsn, pool_size=2, application_name="bench")
        try:
            await upgrade(db)
            async with db.session() as session:
                await ensure_tenant(session, TENANT)
                self.key, _ = await create_key(
                    session, tenant_id=TENANT, name="bench", scopes=["context:read"]
                )
        finally:
            await db.dispose()
        await ensure_topics(self.settings)

    async def produce_backlog(self, customers: int) -> int:
        """``customers`` simulated customers' events on the normalized topic, before any worker
        runs (the bulk producer); the number of events."""
        producer = new_producer(self.settings)
        await producer.start()
        try:
            return await produce_customers(producer, self.settings.topic_normalized, customers)
        finally:
            await producer.stop()

    def spawn(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *argv],
            cwd=ROOT,
            env={**self.env(), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"{argv[0]}-{len(self.children)}.log", "ab"),  # noqa: SIM115
        )
        self.children.append(child)
        return child

    def serve(self, env: dict[str, str] | None = None, workers: int = 1) -> int:
        port = free_port()
        self.spawn(
            "serve", "journey", "--port", str(port), "--host", "127.0.0.1",
            "--workers", str(workers), env=env,
        )  # fmt: skip
        wait_for_port("127.0.0.1", port, timeout=60 * workers + 60)  # slow on a busy machine
        return port

    def stop(self, child: subprocess.Popen[bytes]) -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def close(self) -> None:
        for child in self.children:
            self.stop(child)
        self.infra.stop()


def phone(i: int) -> str:
    return f"+1415{2000000 + i:07d}"


def customer_events(i: int, base: datetime) -> Iterator[dict[str, Any]]:
    """About ten events of one simulated customer across phone, IVR, chat and e-mail."""
    p, email, chat = phone(i), f"c{i}@bench.test", f"chat-{i}"
    t = base + timedelta(seconds=i % 86_400)

    def ev(n: int, type_: str, idents: list[dict[str, str]], **data: Any) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": f"b{i}-{n}",
            "source": "bench",
            "type": type_,
            "time": (t + timedelta(minutes=n)).isoformat(),
            "tenant": TENANT,
            "schemaversion": "1",
            "datacontenttype": "application/json",
            "data": {"identifiers": idents, **data},
        }

    both = [
        {"type": "phone", "value": p, "verified_by": "caller_id"},
        {"type": "email", "value": email, "verified_by": "login"},
    ]
    ph = [{"type": "phone", "value": p, "verified_by": "caller_id"}]
    ch = [{"type": "chat_session", "value": chat}, {"type": "email", "value": email}]
    yield ev(0, "identity.linked", both, traits={"tier": ["gold", "silver"][i % 2]})
    yield ev(1, "contact.started", ph, channel="phone", interaction_id=f"call-{i}")
    yield ev(2, "ivr.step", ph, channel="ivr", node="menu", interaction_id=f"call-{i}")
    yield ev(3, "agent.joined", ph, channel="phone", agent_id=f"a{i % 50}", team="care")
    yield ev(4, "fact.collected", ph, channel="phone", name="order_number", value=f"O-{i}")
    yield ev(5, "case.opened", ph, channel="phone", case_id=f"K-{i}", reason="delivery")
    yield ev(6, "contact.ended", ph, channel="phone", disposition="follow-up")
    yield ev(7, "message.received", ch, channel="web_chat", text="any news?", sentiment=-0.2)
    yield ev(8, "fact.collected", ch, channel="web_chat", name="problem", value="late parcel")
    yield ev(9, "survey.responded", ch, channel="web_chat", survey="csat", score=4)


async def produce_customers(
    producer: AIOKafkaProducer, topic: str, customers: int, *, start: int = 0
) -> int:
    """Produce every customer's events to the normalized topic, keyed as ingest keys them."""
    base = datetime.now(UTC) - timedelta(days=2)
    sent = 0
    batch: list[Any] = []
    for i in range(start, start + customers):
        for event in customer_events(i, base):
            ident = event["data"]["identifiers"]
            key = next((x for x in ident if x["type"] == "email"), ident[0])
            fut = await producer.send(
                topic, orjson.dumps(event), key=f"{TENANT}|{key['type']}:{key['value']}".encode()
            )
            batch.append(fut)
            sent += 1
        if len(batch) >= 20_000:
            await asyncio.gather(*batch)
            batch.clear()
    await asyncio.gather(*batch)
    return sent


async def count_events(db: Database) -> int:
    async with db.engine.connect() as conn:
        from sqlalchemy import text

        value = await conn.scalar(text("SELECT count(*) FROM journey.event"))
        return int(value or 0)


async def wait_stored(
    db: Database, total: int, worker: subprocess.Popen[bytes], *, every: float, log: Any = None
) -> None:
    """Until the journey worker has stored ``total`` events; raises if it exits first."""
    while await count_events(db) < total:
        if worker.poll() is not None:
            where = f"; see {log}" if log else ""
            raise RuntimeError(f"journey worker exited with {worker.returncode}{where}")
        await asyncio.sleep(every)


def cluster_pids(stack: Stack) -> list[int]:
    """This bench's embedded PostgreSQL: the postmaster and its children (backends included;
    empty when DATABASE_URL names another server)."""
    found = []
    for p in psutil.process_iter(["cmdline", "name"]):
        with contextlib.suppress(psutil.Error):
            if "postgres" in (p.info["name"] or "") and str(stack.tmp) in " ".join(
                p.info["cmdline"] or []
            ):
                found += [p.pid, *(c.pid for c in p.children(recursive=True))]
    return sorted(set(found))


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_journey_load.py")],
        input=json.dumps(spec).encode(),
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def start_load(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The load generator in the background (stop it with ``terminate``)."""
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_journey_load.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert child.stdin is not None
    child.stdin.write(json.dumps(spec).encode())
    child.stdin.close()
    return child


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


_SERVER_TIME = "waypoint_http_request_duration_seconds"


def _scrape(port: int, route: str | None = None) -> dict[str, float]:
    """The API's GC-pause and event-loop-lag histograms (shared/runtime.py), summed, and the
    time its middleware saw requests to ``route`` take (``shared/metrics.py``). With several
    uvicorn processes, only the one that answers the scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(_SERVER_TIME):
            if route is None or f'route="{route}"' not in line:
                continue
        elif not line.startswith(
            (
                "waypoint_gc_pause_seconds",
                "waypoint_event_loop_lag_seconds",
                "waypoint_api_key_lookups_total",
            )
        ):
            continue
        name, _, value = line.rpartition(" ")
        metric = name.split("{", 1)[0]
        le = name.split('le="', 1)[1].split('"', 1)[0] if 'le="' in name else ""
        key = f"{metric}|{le}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


_AUTOVACUUM = """SELECT (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)
                         FROM pg_stat_all_tables),
                        (SELECT count(*) FROM pg_stat_activity
                         WHERE backend_type = 'autovacuum worker'),
                        (SELECT count(*) FROM pg_stat_activity
                         WHERE application_name = 'journey-worker' AND state = 'active')"""


class Conditions:
    """What else happened while a measurement ran: GC pauses and event-loop lag in the API
    process, autovacuum runs, whether the journey worker was busy, the machine's load."""

    def __init__(
        self, port: int, dsn: str, route: str | None = None, pids: list[int] | None = None
    ):
        self.port, self.dsn, self.route = port, dsn, route
        self.pids = list(pids or [])  # the API's processes, for their CPU time
        # With several uvicorn processes a scrape reaches any one of them: its histograms'
        # differences would mix processes, so they are not reported.
        self.one_process = len(self.pids) <= 1
        self._metrics: dict[str, float] = {}
        self._autovacuum = 0
        self._cpu = 0.0

    def _server_cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    async def _db(self) -> tuple[int, int, int]:
        import asyncpg

        from shared.db import asyncpg_dsn

        conn = await asyncpg.connect(asyncpg_dsn(self.dsn))
        try:
            row = await conn.fetchrow(_AUTOVACUUM)
            return int(row[0]), int(row[1]), int(row[2])
        finally:
            await conn.close()

    async def start(self) -> None:
        self._metrics = _scrape(self.port, self.route)
        self._cpu = self._server_cpu()
        self._autovacuum, self._av_workers, self._busy = await self._db()

    async def stop(self) -> dict[str, Any]:
        server_cpu = self._server_cpu() - self._cpu
        after = _scrape(self.port, self.route)
        d = {k: after.get(k, 0.0) - self._metrics.get(k, 0.0) for k in after}
        served = d.get(f"{_SERVER_TIME}_count|", 0)
        buckets = sorted(
            (float(k.split("|")[1]), v)
            for k, v in d.items()
            if k.startswith(f"{_SERVER_TIME}_bucket|") and k.split("|")[1] != "+Inf"
        )
        # The server's own p99: the upper bound of the histogram bucket that holds it.
        server_p99 = next((le for le, n in buckets if n >= 0.99 * served), float("inf"))
        autovacuum, av_workers, busy = await self._db()
        gc_n = d.get("waypoint_gc_pause_seconds_count|", 0)
        lag_n = d.get("waypoint_event_loop_lag_seconds_count|", 0)
        out = {
            "histograms": "one process" if self.one_process else "n/a: several processes",
            "gc_pauses": int(gc_n),
            "gc_pause_ms_total": round(1000 * d.get("waypoint_gc_pause_seconds_sum|", 0), 1),
            "gc_pauses_over_5ms": int(gc_n - d.get("waypoint_gc_pause_seconds_bucket|0.005", 0)),
            "loop_lag_samples": int(lag_n),
            "loop_lag_mean_ms": round(
                1000 * d.get("waypoint_event_loop_lag_seconds_sum|", 0) / max(lag_n, 1), 2
            ),
            "loop_lag_over_10ms": int(
                lag_n - d.get("waypoint_event_loop_lag_seconds_bucket|0.01", 0)
            ),
            "loop_lag_over_100ms": int(
                lag_n - d.get("waypoint_event_loop_lag_seconds_bucket|0.1", 0)
            ),
            "server_requests": int(served),
            "server_mean_ms": round(1000 * d.get(f"{_SERVER_TIME}_sum|", 0) / max(served, 1), 2),
            "server_p99_ms_at_most": None if server_p99 == float("inf") else 1000 * server_p99,
            "server_over_ms": {
                str(t): int(served - d.get(f"{_SERVER_TIME}_bucket|{t / 1000}", served))
                for t in (10, 25, 50)
            },
            "server_cpu_s": round(server_cpu, 3),  # all the API's processes
            # API-key cache misses (each a database read before the request can go on).
            "api_key_lookups": int(d.get("waypoint_api_key_lookups_total|", 0)),
            "autovacuum_runs": autovacuum - self._autovacuum,
            "autovacuum_workers_at_start_end": [self._av_workers, av_workers],
            "journey_worker_active_at_start_end": [self._busy, busy],
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if not self.one_process:
            for key in ("gc_pauses", "gc_pause_ms_total", "gc_pauses_over_5ms", "loop_lag_samples",
                        "loop_lag_mean_ms", "loop_lag_over_10ms", "loop_lag_over_100ms",
                        "server_requests", "server_mean_ms", "api_key_lookups",
                        "server_p99_ms_at_most", "server_over_ms"):  # fmt: skip
                out[key] = None
        return out


def new_producer(settings: JourneySettings) -> AIOKafkaProducer:
    return make_producer(settings, linger_ms=20)


def elapsed(since: float) -> float:
    return time.perf_counter() - since


_WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def wrk_max(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The closed-loop max measured by wrk (C, one thread), as a cross-check of the Python
    generator's: None when wrk is not installed (``apt-get install wrk``)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script, paths = Path(tmp) / "paths.lua", Path(tmp) / "paths.txt"
        script.write_text(_WRK_SCRIPT)
        paths.write_text("\n".join(spec["paths"]) + "\n")
        argv = [wrk, "-t1", f"-c{spec['concurrency']}", f"-d{round(spec['duration'])}s"]
        for k, v in spec.get("headers", {}).items():
            argv += ["-H", f"{k}: {v}"]
        argv += ["-s", str(script), f"http://{spec['host']}:{spec['port']}/"]
        if spec.get("cpu") is not None:
            argv = ["taskset", "-c", str(spec["cpu"]), *argv]
        if spec.get("nice"):
            argv = ["nice", "-n", str(spec["nice"]), *argv]
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, env={**os.environ, "WRK_PATHS": str(paths)}
        )
        assert child.stdout is not None
        out = child.stdout.read().decode()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"wrk exited with {child.returncode}: {out}")
    requests = int(out.split(" requests in ")[0].split()[-1])
    bad = 0
    for line in out.splitlines():
        if "Non-2xx or 3xx responses:" in line:
            bad = int(line.split(":")[1])
    rps = float(out.split("Requests/sec:")[1].split()[0])
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "rps": rps,
        "requests": requests,
        "non_2xx": bad,
        "cpu_us_per_request": round(1e6 * cpu / requests, 1) if requests else None,
    }
