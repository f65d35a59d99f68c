"""Journey freshness: produce an event to Kafka → the change is visible to the agent.

Set-up: BENCH_FRESHNESS_CUSTOMERS (5,000) customers × 10 events applied by a ``waypoint worker
journey`` process; ``waypoint serve journey`` for reads. Under background load (events for other
customers at BENCH_FRESHNESS_BG_RATE events/s, 300 by default, plus screen pops at 100 req/s),
BENCH_FRESHNESS_SAMPLES (1,000) probes per read, 10 in flight: each produces a ``fact.collected``
with a unique value to the normalized topic (with ingest's producer settings) and waits until the
agent's side shows it. Two reads, alternating probe by probe in the same run
(BENCH_FRESHNESS_READS, "stream,poll"; the first is the headline figure):

- ``stream``: what the agent desktop reads. The probe holds the customer's context stream
  (``GET /v1/customers/{id}/stream``, server-sent events; the agent page's
  ``/app/agent/customers/{id}/live`` works the same way) and the figure ends when the pushed
  context has the value: the API's own LISTEN, its database read, the push.
- ``poll``: the bench's own LISTEN has the context-changed NOTIFY, then it reads
  ``GET /v1/customers/{id}/context`` (cache on) until the value is there.

The figure is produce-call → shown. Raw limit in the same run: a produce → consume round trip on
the same broker (no processing).

Each probe is split into its parts (wall clock, one machine, one clock): produce → the broker's
acknowledgement; produce → a free-running consumer of the same topic (its own group, the worker's
fetch settings) receives it, i.e. the transport with no processing; produce → the worker's chunk
transaction began (``journey.context.updated_at`` of the probed customer, which only probes
touch: ``now()`` is the transaction's start, right after the worker took the batch); that
transaction's start → its NOTIFY reaches the bench; NOTIFY → the value shown. The worker's metrics
(batch sizes, handle and offset-commit times), its CPU time idle and under load, and the API
process's conditions (event-loop lag, GC pauses, its look-up times by kind) are printed too.
Last line: JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402
from aiokafka import TopicPartition  # noqa: E402

from bench._journey_stack import (  # noqa: E402
    TENANT,
    Conditions,
    Stack,
    count_events,
    machine,
    new_producer,
    phone,
    produce_customers,
    start_load,
)
from shared.db import Database, asyncpg_dsn  # noqa: E402
from shared.embedded import free_port  # noqa: E402
from shared.kafka import make_consumer, make_producer  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_FRESHNESS_CUSTOMERS", "5000"))
SAMPLES = int(os.environ.get("BENCH_FRESHNESS_SAMPLES", "1000"))  # per read
BG_RATE = float(os.environ.get("BENCH_FRESHNESS_BG_RATE", "300"))
# What the agent's side reads after the change: "stream" is what the agent desktop reads (the
# context SSE stream, ``GET /v1/customers/{id}/stream``: the API's own LISTEN pushes the changed
# context, as the agent page's ``/app/agent/customers/{id}/live`` does), "poll" a client that
# waits for the NOTIFY itself and then asks ``GET /v1/customers/{id}/context`` (cache on). Both,
# alternating probe by probe in the same run, by default; the first is the headline figure.
READ_WHAT = {
    "stream": "GET /v1/customers/{id}/stream, the SSE push the agent desktop shows",
    "poll": "the bench's own LISTEN, then GET /v1/customers/{id}/context until shown",
}
READS = [r for r in os.environ.get("BENCH_FRESHNESS_READS", "stream,poll").split(",") if r]
IN_FLIGHT = 10
TICKS = os.sysconf("SC_CLK_TCK")

# The parts of a probe, each from one timestamp to another (see the docstring).
PARTS = {
    "produce_to_ack": ("produced", "acked"),
    "produce_to_free_consumer": ("produced", "consumed"),
    "produce_to_chunk_began": ("produced", "chunk_began"),
    "free_consumer_to_chunk_began": ("consumed", "chunk_began"),
    "chunk_began_to_notify": ("chunk_began", "notified"),
    "notify_to_visible": ("notified", "visible"),
    "notify_to_first_read_answered": ("notified", "first_read"),
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def worker_metrics(port: int, gauge: str = "") -> dict[str, float]:
    """The worker's consumer-loop and chunk histograms (sums and counts), or one gauge."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(
            (gauge,) if gauge else ("waypoint_consumer_", "waypoint_journey_chunk_duration")
        ):
            continue
        name, _, value = line.rpartition(" ")
        if gauge or name.endswith(("_sum", "_count")) or "_sum{" in name or "_count{" in name:
            out[name.split("{", 1)[0]] = out.get(name.split("{", 1)[0], 0.0) + float(value)
    return out


def lookup_buckets(port: int) -> dict[tuple[str, float], float]:
    """The API's context look-up time histogram (the database read of a cache miss, or the
    cache hit), cumulative counts by (kind, upper bound in seconds)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, float], float] = {}
    for line in text.splitlines():
        if line.startswith("waypoint_journey_lookup_duration_seconds_bucket{"):
            name, _, value = line.rpartition(" ")
            kind = name.split('kind="', 1)[1].split('"', 1)[0]
            le = name.split('le="', 1)[1].split('"', 1)[0]
            out[kind, float(le)] = float(value)
    return out


def bucket_pct(
    before: dict[tuple[str, float], float], after: dict[tuple[str, float], float], kind: str
) -> dict[str, float]:
    """Look-ups of ``kind`` between two scrapes: count, and the bucket bounds (ms) holding the
    median and the 99th percentile."""
    bounds = sorted(le for k, le in after if k == kind)
    counts = [after[kind, le] - before.get((kind, le), 0.0) for le in bounds]
    total = counts[-1] if counts else 0.0
    out: dict[str, float] = {"count": total}
    for q, name in ((0.5, "p50_le_ms"), (0.99, "p99_le_ms")):
        le = next((b for b, c in zip(bounds, counts, strict=True) if c >= q * total), 0.0)
        out[name] = le * 1000
    return out


def probe_event(i: int, value: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"probe-{uuid.uuid4().hex}",
        "source": "bench",
        "type": "fact.collected",
        "time": datetime.now(UTC).isoformat(),
        "tenant": TENANT,
        "data": {
            "identifiers": [{"type": "phone", "value": phone(i), "verified_by": "caller_id"}],
            "channel": "phone",
            "name": "probe",
            "value": value,
        },
    }


async def raw_round_trip(stack: Stack, samples: int = 200) -> list[float]:
    """Produce → consume on the same broker, no processing: the transport's own latency."""
    topic = stack.settings.topic_raw
    producer = new_producer(stack.settings)
    consumer = make_consumer(
        stack.settings,
        topic,
        group_id=f"rt-{uuid.uuid4().hex[:6]}",
        fetch_max_wait_ms=stack.settings.fetch_max_wait_ms,  # as the journey worker fetches
    )
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        while not await consumer.getmany(timeout_ms=1000):
            pass
        out = []
        for n in range(samples):
            t0 = time.perf_counter()
            await producer.send(topic, str(n).encode())
            got = False
            while not got:
                batches = await consumer.getmany(timeout_ms=1000)
                got = any(r.value == str(n).encode() for rs in batches.values() for r in rs)
            out.append(time.perf_counter() - t0)
        return out
    finally:
        await consumer.stop()
        await producer.stop()


async def free_consumer(
    stack: Stack, seen: dict[str, float], ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """Note when each probe reaches a consumer that does nothing else (every partition assigned
    by hand, no group, the worker's fetch settings): the transport's share of each probe."""
    topic = stack.settings.topic_normalized
    consumer = make_consumer(
        stack.settings, group_id=None, fetch_max_wait_ms=stack.settings.fetch_max_wait_ms
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batches.values():
                for r in records:
                    if r.value is not None and b'"name":"probe"' in r.value:
                        seen[orjson.loads(r.value)["data"]["value"]] = now
    finally:
        await consumer.stop()


async def main() -> dict[str, Any]:
    stack = Stack()
    try:
        await stack.prepare()
        settings = stack.settings
        producer = new_producer(settings)
        await producer.start()
        total = await produce_customers(producer, settings.topic_normalized, CUSTOMERS)
        metrics_port = free_port()
        worker = stack.spawn("worker", "journey", "--metrics-port", str(metrics_port))
        db = Database(settings.dsn, pool_size=1, application_name="bench-probe")
        while await count_events(db) < total:
            await asyncio.sleep(1)
        await db.dispose()
        print(f"loaded {CUSTOMERS:,} customers ({total:,} events)")
        cpu0, t_idle = cpu_seconds(worker.pid), time.perf_counter()
        await asyncio.sleep(5)
        idle_cpu = (cpu_seconds(worker.pid) - cpu0) / (time.perf_counter() - t_idle)
        print(f"worker idle: {100 * idle_cpu:.1f} % of a core")
        transport = await raw_round_trip(stack)
        print(
            f"raw limit, produce → consume round trip: p50 {pct(transport, 0.5):.1f} ms, "
            f"p99 {pct(transport, 0.99):.1f} ms"
        )
        port = stack.serve()
        headers = {"Authorization": f"Bearer {stack.key}"}

        waiters: dict[str, tuple[asyncio.Event, dict[str, float]]] = {}
        listener = await asyncpg.connect(asyncpg_dsn(settings.dsn))
        reader = await asyncpg.create_pool(asyncpg_dsn(settings.dsn), min_size=1, max_size=2)

        def on_notify(_c: Any, _p: int, _ch: str, payload: str) -> None:
            cid = payload.split("|")[1]
            if cid in waiters and "notified" not in waiters[cid][1]:
                waiters[cid][1]["notified"] = time.time()
                waiters[cid][0].set()

        await listener.add_listener(settings.notify_channel, on_notify)
        stop = asyncio.Event()
        consumed: dict[str, float] = {}
        free_ready = asyncio.Event()
        free = asyncio.create_task(free_consumer(stack, consumed, free_ready, stop))

        async def background() -> None:
            rng, n = random.Random(3), 0
            started = time.perf_counter()
            while not stop.is_set():
                n += 1
                i = rng.randrange(IN_FLIGHT * 10, CUSTOMERS)  # never a probed customer
                event = probe_event(i, f"bg-{n}")
                event["data"]["name"] = "background"
                await producer.send(
                    settings.topic_normalized,
                    orjson.dumps(event),
                    key=f"{TENANT}|phone:{phone(i)}".encode(),
                )
                delay = started + n / BG_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)

        bg = asyncio.create_task(background())
        reads = start_load(
            {
                "host": "127.0.0.1",
                "port": port,
                "headers": headers,
                "paths": [
                    f"/v1/context?identifier_type=phone&value=%2B{phone(i)[1:]}"
                    for i in range(IN_FLIGHT * 10, CUSTOMERS, 7)
                ],
                "concurrency": 4,
                "duration": 3600,
                "rate": 100,
            }
        )
        latencies: dict[str, list[float]] = {read: [] for read in READS}
        probed: list[tuple[str, str, dict[str, float]]] = []  # (read, value, stamps)
        # Probes are produced as ingest produces to the normalized topic (its producer's
        # settings: linger 5 ms); the background keeps the bench's batching producer.
        probe_producer = make_producer(settings)
        await probe_producer.start()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
        ) as http:
            cids = {}
            for slot in range(IN_FLIGHT * 10):
                r = await http.get(
                    "/v1/context", params={"identifier_type": "phone", "value": phone(slot)}
                )
                cids[slot] = r.json()["customer_id"]
            await asyncio.wait_for(free_ready.wait(), 60)

            async def poll(cid: str, value: str, stamps: dict[str, float]) -> None:
                """Wait for the NOTIFY, then read until the value is there: the API process
                may apply the same notice to its cache a moment later, as a polling client
                would find."""
                await waiters[cid][0].wait()
                while True:
                    try:
                        r = await http.get(f"/v1/customers/{cid}/context")
                    except httpx.TransportError:  # a kept-alive connection the API closed
                        continue
                    stamps.setdefault("first_read", time.time())
                    stamps["reads"] = stamps.get("reads", 0) + 1
                    if any(f["value"] == value for f in r.json()["facts"]):
                        stamps["visible"] = time.time()
                        return
                    await asyncio.sleep(0.002)

            async def probe(read: str, slot: int, cid: str, value: str) -> dict[str, float]:
                stamps: dict[str, float] = {}
                waiters[cid] = (asyncio.Event(), stamps)

                async def produce() -> None:
                    stamps["produced"] = time.time()
                    sent = await probe_producer.send(
                        settings.topic_normalized,
                        orjson.dumps(probe_event(slot, value)),
                        key=f"{TENANT}|phone:{phone(slot)}".encode(),
                    )
                    sent.add_done_callback(lambda _f: stamps.setdefault("acked", time.time()))

                if read == "poll":
                    await produce()
                    await poll(cid, value, stamps)
                    return stamps
                # The desktop's read: the stream's first event is the context now; then the
                # change is pushed by the API after its own LISTEN has the notice.
                while True:
                    try:
                        async with http.stream("GET", f"/v1/customers/{cid}/stream") as resp:
                            resp.raise_for_status()
                            lines = resp.aiter_lines()
                            async for line in lines:
                                if line == "":  # the end of the first event
                                    break
                            await produce()
                            async for line in lines:
                                if line.startswith("data:"):
                                    stamps.setdefault("first_read", time.time())
                                    stamps["reads"] = stamps.get("reads", 0) + 1
                                    if value in line:
                                        stamps["visible"] = time.time()
                                        return stamps
                        break
                    except httpx.TransportError:
                        if "produced" in stamps:
                            raise
                        # a kept-alive connection the API closed: open the stream again
                raise RuntimeError(f"the stream of {cid} ended before probe {value} was shown")

            async def prober(lane: int) -> None:
                n = 0
                while sum(map(len, latencies.values())) < SAMPLES * len(READS):
                    read = READS[(n // 10 + lane) % len(READS)]
                    slot = lane * 10 + n % 10
                    n += 1
                    cid, value = cids[slot], uuid.uuid4().hex
                    try:
                        stamps = await asyncio.wait_for(probe(read, slot, cid, value), 30)
                    except TimeoutError:
                        lag = worker_metrics(metrics_port, "waypoint_consumer_lag{")
                        raise TimeoutError(
                            f"probe {value} ({read}) not shown in 30 s; the worker's lag: {lag}"
                        ) from None
                    # From the produce call: a stream probe opens its stream first.
                    latencies[read].append(stamps["visible"] - stamps["produced"])
                    # The bench's own LISTEN may have the notice a moment after the stream.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiters[cid][0].wait(), 5)
                    del waiters[cid]
                    # Only probes write this customer: the row's time is the probe's chunk's.
                    began = await reader.fetchval(
                        "SELECT extract(epoch FROM updated_at) FROM journey.context "
                        "WHERE tenant_id = $1 AND customer_id = $2",
                        TENANT,
                        uuid.UUID(cid),
                    )
                    stamps["chunk_began"] = float(began)
                    probed.append((read, value, stamps))

            before = worker_metrics(metrics_port)
            api_before = lookup_buckets(port)
            conditions = Conditions(port, settings.dsn)
            await conditions.start()
            cpu_before = cpu_seconds(worker.pid)
            started = time.perf_counter()
            await asyncio.gather(*(prober(lane) for lane in range(IN_FLIGHT)))
            wall = time.perf_counter() - started
            worker_cpu = cpu_seconds(worker.pid) - cpu_before
            after = worker_metrics(metrics_port)
            api_after = lookup_buckets(port)
            api = {
                "conditions": await conditions.stop(),
                "lookup_stream": bucket_pct(api_before, api_after, "stream"),
                "lookup_by_id": bucket_pct(api_before, api_after, "customer"),
                "lookup_screen_pop": bucket_pct(api_before, api_after, "context"),
            }
        stop.set()
        await bg
        await free
        reads.terminate()
        reads.wait(10)
        await listener.close()
        await reader.close()
        await producer.stop()
        await probe_producer.stop()
        nan = float("nan")
        by_read: dict[str, dict[str, Any]] = {}
        for read in READS:
            lat = latencies[read]
            # A probe the free consumer missed (it joined late) has no "consumed" time: NaN.
            probes = [{**st, "consumed": consumed.get(v, nan)} for r, v, st in probed if r == read]
            figures: dict[str, Any] = {
                "samples": len(lat),
                "p50_ms": round(pct(lat, 0.5), 1),
                "p99_ms": round(pct(lat, 0.99), 1),
                "max_ms": round(max(lat) * 1000, 1),
            }
            print(
                f"freshness, read '{read}' ({READ_WHAT[read]}), {len(lat):,} probes: "
                f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
                f"max {figures['max_ms']:.1f} ms"
            )
            parts: dict[str, dict[str, float]] = {}
            for name, (a, b) in PARTS.items():
                values = [p.get(b, nan) - p.get(a, nan) for p in probes]
                values = [x for x in values if x == x]
                if values:
                    parts[name] = {
                        "p50_ms": round(pct(values, 0.5), 1),
                        "p99_ms": round(pct(values, 0.99), 1),
                    }
                    print(
                        f"  {name:<30} p50 {parts[name]['p50_ms']:7.1f} ms   "
                        f"p99 {parts[name]['p99_ms']:7.1f} ms   ({len(values)} probes)"
                    )
            slowest = sorted(probes, key=lambda p: p["visible"] - p["produced"])
            slowest = slowest[-max(1, len(probes) // 50) :]
            tail = {}
            for name, (a, b) in PARTS.items():
                values = [p.get(b, nan) - p.get(a, nan) for p in slowest]
                values = [x for x in values if x == x]
                tail[name] = round(1000 * sum(values) / max(1, len(values)), 1)
            print(f"  slowest 2 % of probes, mean of each part (ms): {tail}")
            reads_per = sum(p.get("reads", 0) for p in probes) / len(probes)
            stale = sum(1 for p in probes if p.get("reads", 0) > 1) / len(probes)
            print(
                f"  {'pushes' if read == 'stream' else 'API reads'} per probe: {reads_per:.2f} "
                f"(the first one still without the value in {100 * stale:.1f} % of probes)"
            )
            by_read[read] = {
                **figures,
                "parts": parts,
                "slowest_2pct_parts_mean_ms": tail,
                "reads_per_probe": round(reads_per, 2),
                "first_read_stale_share": round(stale, 3),
            }
        head = by_read[READS[0]]
        print(
            f"freshness (headline: read '{READS[0]}'), background {BG_RATE:g} events/s + 100 "
            f"screen pops/s, {wall:.0f} s: p50 {head['p50_ms']:.1f} ms, "
            f"p99 {head['p99_ms']:.1f} ms (target p99 <= 100 ms)"
        )
        d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}

        def mean_ms(metric: str) -> float:
            n = d.get(f"{metric}_count", 0.0)
            return round(1000 * d.get(f"{metric}_sum", 0.0) / n, 2) if n else 0.0

        batches = d.get("waypoint_consumer_batch_size_count", 0.0)
        loop = {
            "batches": int(batches),
            "records_per_batch": round(d.get("waypoint_consumer_batch_size_sum", 0.0) / batches, 1)
            if batches
            else 0.0,
            "batch_handle_and_commit_ms": mean_ms("waypoint_consumer_batch_duration_seconds"),
            "chunk_transaction_ms": mean_ms("waypoint_journey_chunk_duration_seconds"),
            "offset_commit_ms": mean_ms("waypoint_consumer_commit_duration_seconds"),
            "worker_cpu_share": round(worker_cpu / wall, 3),
            "worker_idle_cpu_share": round(idle_cpu, 4),
        }
        print(f"  worker: {loop}")
        print(f"  API process: {api}")
        return {
            "bench": "journey_freshness",
            "read": READS[0],
            "read_measured": READ_WHAT[READS[0]],
            "samples": head["samples"],
            "customers": CUSTOMERS,
            "background_events_per_s": BG_RATE,
            "p50_ms": head["p50_ms"],
            "p99_ms": head["p99_ms"],
            "max_ms": head["max_ms"],
            "raw_round_trip_p50_ms": round(pct(transport, 0.5), 1),
            "raw_round_trip_p99_ms": round(pct(transport, 0.99), 1),
            "by_read": by_read,
            "worker": loop,
            "api": api,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(),
        }
    finally:
        stack.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
