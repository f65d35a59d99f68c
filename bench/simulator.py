"""Simulator throughput: generation (pure) and sending to the broker, each against its raw limit.

(a) generate N events vs. building the same number of flat dicts (the floor for any generator);
(b) plan + send them to the broker with ``services.simulator.producer.send`` vs. a bare
aiokafka loop sending the same pre-serialized bytes. Uses KAFKA_BOOTSTRAP_SERVERS or starts
the embedded broker. Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
import uuid

from services.simulator import generate, generate_keyed
from services.simulator.producer import send
from services.simulator.records import plan
from shared.config import CommonSettings
from shared.kafka import ensure_topics, make_producer

CUSTOMERS = int(os.environ.get("BENCH_SIM_CUSTOMERS", "4000"))


def bench_generation() -> tuple[float, float, int]:
    started = time.perf_counter()
    count = sum(1 for _ in generate(customers=CUSTOMERS, seed=1, tenant="bench"))
    generated = count / (time.perf_counter() - started)
    started = time.perf_counter()
    floor = [{"id": str(i), "type": "x", "data": {"identifiers": [{"v": i}]}} for i in range(count)]
    raw = len(floor) / (time.perf_counter() - started)
    return generated, raw, count


async def bench_send(settings: CommonSettings) -> tuple[float, float, int]:
    records = list(
        plan(
            generate_keyed(customers=CUSTOMERS // 2, seed=2, tenant="bench"),
            seed=2,
            tenant="bench",
            binary_fraction=0.2,
        )
    )
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = f"bench-sim-{uuid.uuid4().hex[:6]}"
        await ensure_topics(settings, [topic], partitions=4)
        started = time.perf_counter()
        await send(producer, topic, records)
        ours = len(records) / (time.perf_counter() - started)
        started = time.perf_counter()
        futures = [await producer.send(topic, r.value, key=r.key) for r in records]
        await asyncio.gather(*futures)
        raw = len(records) / (time.perf_counter() - started)
    finally:
        await producer.stop()
    return ours, raw, len(records)


async def main() -> None:
    settings = CommonSettings()
    broker = None
    if not settings.kafka_bootstrap_servers:
        from shared.embedded import start_broker

        broker = start_broker()
        settings = CommonSettings(kafka_bootstrap_servers=broker.bootstrap)
    try:
        generated, floor, count = bench_generation()
        print(
            f"generate: {count} events, {generated:,.0f} events/s "
            f"(flat dict floor {floor:,.0f}/s, ratio {generated / floor:.2f})"
        )
        sent, raw, records = await bench_send(settings)
        print(
            f"send: {records} records, {sent:,.0f} records/s "
            f"(bare aiokafka {raw:,.0f}/s, ratio {sent / raw:.2f})"
        )
    finally:
        if broker is not None:
            broker.stop()
    print(
        json.dumps(
            {
                "bench": "simulator",
                "machine": f"{os.cpu_count()} cores, {platform.machine()}",
                "events": count,
                "generate_events_per_s": round(generated),
                "generate_floor_per_s": round(floor),
                "send_records_per_s": round(sent),
                "send_raw_per_s": round(raw),
                "send_ratio": round(sent / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
