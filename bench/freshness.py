"""Journey freshness: produce an event to Kafka → the change is visible in the agent's context.

Set-up: BENCH_FRESHNESS_CUSTOMERS (5,000) customers × 10 events applied by a ``waypoint worker
journey`` process; ``waypoint serve journey`` for reads. Under background load (events for other
customers at BENCH_FRESHNESS_BG_RATE events/s, 300 by default, plus screen pops at 100 req/s),
BENCH_FRESHNESS_SAMPLES (1,000) probes, 10 in flight: each produces a ``fact.collected`` with a
unique value to the normalized topic, waits for the context-changed notification the agent
desktop's stream is driven by, then reads the context (API, cache on) until the value is there. The
figure is produce-call → confirmed by the API. Raw limit in the same run: a produce → consume
round trip on the same broker (no processing). Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import orjson  # noqa: E402

from bench._journey_stack import (  # noqa: E402
    TENANT,
    Stack,
    count_events,
    machine,
    new_producer,
    phone,
    produce_customers,
    start_load,
)
from shared.db import Database, asyncpg_dsn  # noqa: E402
from shared.kafka import make_consumer  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_FRESHNESS_CUSTOMERS", "5000"))
SAMPLES = int(os.environ.get("BENCH_FRESHNESS_SAMPLES", "1000"))
BG_RATE = float(os.environ.get("BENCH_FRESHNESS_BG_RATE", "300"))
IN_FLIGHT = 10


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


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


async def main() -> dict[str, Any]:
    stack = Stack()
    try:
        await stack.prepare()
        settings = stack.settings
        producer = new_producer(settings)
        await producer.start()
        total = await produce_customers(producer, settings.topic_normalized, CUSTOMERS)
        stack.spawn("worker", "journey")
        db = Database(settings.dsn, pool_size=1, application_name="bench-probe")
        while await count_events(db) < total:
            await asyncio.sleep(1)
        await db.dispose()
        print(f"loaded {CUSTOMERS:,} customers ({total:,} events)")
        transport = await raw_round_trip(stack)
        print(
            f"raw limit, produce → consume round trip: p50 {pct(transport, 0.5):.1f} ms, "
            f"p99 {pct(transport, 0.99):.1f} ms"
        )
        port = stack.serve()
        headers = {"Authorization": f"Bearer {stack.key}"}

        waiters: dict[str, asyncio.Event] = {}
        listener = await asyncpg.connect(asyncpg_dsn(settings.dsn))

        def on_notify(_c: Any, _p: int, _ch: str, payload: str) -> None:
            cid = payload.split("|")[1]
            if cid in waiters:
                waiters[cid].set()

        await listener.add_listener(settings.notify_channel, on_notify)
        stop = asyncio.Event()

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
        latencies: list[float] = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
            cids = {}
            for slot in range(IN_FLIGHT * 10):
                r = await http.get(
                    "/v1/context", params={"identifier_type": "phone", "value": phone(slot)}
                )
                cids[slot] = r.json()["customer_id"]

            async def prober(lane: int) -> None:
                n = 0
                while len(latencies) < SAMPLES:
                    slot = lane * 10 + n % 10
                    n += 1
                    cid, value = cids[slot], uuid.uuid4().hex
                    waiters[cid] = ready = asyncio.Event()
                    t0 = time.perf_counter()
                    await producer.send(
                        settings.topic_normalized,
                        orjson.dumps(probe_event(slot, value)),
                        key=f"{TENANT}|phone:{phone(slot)}".encode(),
                    )
                    await asyncio.wait_for(ready.wait(), 30)
                    # The API process may apply the same notice a moment later (its cache):
                    # read until the value is there, as a polling desktop would.
                    deadline = time.perf_counter() + 30
                    while time.perf_counter() < deadline:
                        r = await http.get(f"/v1/customers/{cid}/context")
                        if any(f["value"] == value for f in r.json()["facts"]):
                            break
                        await asyncio.sleep(0.002)
                    else:
                        raise TimeoutError(f"probe {value} never became visible")
                    latencies.append(time.perf_counter() - t0)
                    del waiters[cid]

            started = time.perf_counter()
            await asyncio.gather(*(prober(lane) for lane in range(IN_FLIGHT)))
            wall = time.perf_counter() - started
        stop.set()
        await bg
        reads.terminate()
        reads.wait(10)
        await listener.close()
        await producer.stop()
        p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
        print(
            f"freshness over {len(latencies):,} samples ({wall:.0f} s, background "
            f"{BG_RATE:g} events/s + 100 screen pops/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms (target p99 <= 250 ms)"
        )
        return {
            "bench": "journey_freshness",
            "samples": len(latencies),
            "customers": CUSTOMERS,
            "background_events_per_s": BG_RATE,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "raw_round_trip_p50_ms": round(pct(transport, 0.5), 1),
            "raw_round_trip_p99_ms": round(pct(transport, 0.99), 1),
            "machine": machine(),
        }
    finally:
        stack.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
