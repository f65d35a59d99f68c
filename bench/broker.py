"""The embedded broker's two storages: memory and S3 (SeaweedFS under the data folder).

For each: start time; produce BENCH_BROKER_MESSAGES (200,000) messages of 200 bytes, 8
partitions, acks=all; consume them all in a group, committing; then stop the broker (politely,
bounded) and start it again on the same data, and check what survived: every message, and the
group's committed offsets. Also the object store's RSS and its stop time. Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from shared.embedded import Broker, BrokerStorage, free_port, start_broker  # noqa: E402

MESSAGES = int(os.environ.get("BENCH_BROKER_MESSAGES", "200000"))
PARTITIONS = 8
TOPIC = "bench"
GROUP = "bench-group"


async def produce(bootstrap: str) -> float:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    value = b"x" * 200
    started = time.perf_counter()
    pending = []
    for i in range(MESSAGES):
        pending.append(await producer.send(TOPIC, value, key=str(i).encode()))
        if len(pending) >= 20_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - started
    await producer.stop()
    return elapsed


async def consume(bootstrap: str) -> float:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=5000,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    started = time.perf_counter()
    seen = 0
    while seen < MESSAGES:
        batches = await consumer.getmany(timeout_ms=500, max_records=5000)
        seen += sum(len(r) for r in batches.values())
        if batches:
            await consumer.commit({tp: r[-1].offset + 1 for tp, r in batches.items()})
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return elapsed


async def survived(bootstrap: str) -> tuple[int, int]:
    """(messages readable from offset 0, sum of the group's committed offsets)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await reader.start()
    try:
        if TOPIC not in await reader.topics():
            return 0, 0  # the restarted broker starts empty (memory storage)
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        reader.assign(partitions)
        committed = 0
        for tp in partitions:
            committed += await reader.committed(tp) or 0
        await reader.seek_to_beginning()
        count, idle = 0, 0
        while idle < 5:
            batches = await reader.getmany(timeout_ms=300, max_records=10_000)
            got = sum(len(r) for r in batches.values())
            count += got
            idle = 0 if got else idle + 1
        return count, committed
    finally:
        await reader.stop()


async def bounded(work: Any, seconds: float = 300) -> Any:
    """A phase that hangs (a broker that went away: clients retry forever) fails instead."""
    return await asyncio.wait_for(work, seconds)


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def measure(storage: BrokerStorage, workdir: Path) -> dict[str, Any]:
    port = free_port()
    started = time.perf_counter()
    broker: Broker = start_broker(
        port, storage=storage, data_dir=workdir, log_path=workdir / "broker.log"
    )
    start_s = time.perf_counter() - started
    try:
        produce_s = asyncio.run(bounded(produce(broker.bootstrap)))
        consume_s = asyncio.run(bounded(consume(broker.bootstrap)))
        store_rss = rss_mb(broker.store.process.pid) if broker.store and broker.store.process else 0
        stopping = time.perf_counter()
        broker.stop()
        stop_s = time.perf_counter() - stopping
        broker.start()
        after_restart, committed = asyncio.run(bounded(survived(broker.bootstrap)))
    finally:
        broker.stop()
    result = {
        "storage": storage.value,
        "messages": MESSAGES,
        "start_s": round(start_s, 2),
        "produce_s": round(produce_s, 2),
        "produce_per_s": round(MESSAGES / produce_s),
        "consume_s": round(consume_s, 2),
        "consume_per_s": round(MESSAGES / consume_s),
        "stop_s": round(stop_s, 2),
        "store_rss_mb": round(store_rss),
        "survived_messages": after_restart,
        "survived_committed": committed,
    }
    print(
        f"{storage.value:>6}: start {start_s:.1f}s, produce {produce_s:.2f}s "
        f"({MESSAGES / produce_s:,.0f}/s), consume+commit {consume_s:.2f}s "
        f"({MESSAGES / consume_s:,.0f}/s), stop {stop_s:.1f}s, object store RSS "
        f"{store_rss:.0f} MB; after a restart: {after_restart:,} messages, "
        f"committed offsets summing to {committed:,}",
        flush=True,
    )
    return result


def main() -> None:
    results = {}
    for storage in (BrokerStorage.memory, BrokerStorage.s3):
        with tempfile.TemporaryDirectory(prefix=f"bench-broker-{storage.value}-") as tmp:
            results[storage.value] = measure(storage, Path(tmp))
    print(json.dumps({"bench": "broker", **results}))


if __name__ == "__main__":
    main()
