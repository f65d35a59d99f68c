"""``waypoint simulate`` through the real broker: what it prints is what lands in the topic."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from collections import Counter
from typing import Any

from services.simulator import generate_keyed
from services.simulator.producer import send
from services.simulator.records import plan
from shared.config import CommonSettings
from shared.kafka import ensure_topics, make_consumer, make_producer


async def _drain(settings: CommonSettings, topic: str, expected: int) -> list[Any]:
    consumer = make_consumer(
        settings, topic, group_id=f"sim-test-{uuid.uuid4().hex}", session_timeout_ms=6_000
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def test_simulate_command_sends_structured_binary_and_poison(
    settings: CommonSettings,
) -> None:
    topic = f"test-sim-{uuid.uuid4().hex[:8]}.raw"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "WAYPOINT_TOPIC_RAW": topic,
        "WAYPOINT_TOPIC_PARTITIONS": "2",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "simulate", "--customers", "12", "--seed", "4",
        "--tenant", "acme", "--binary-fraction", "0.3", "--invalid-fraction", "0.05",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(process.communicate(), 120))[0].decode()
    assert process.returncode == 0, output
    match = re.search(
        r"sent (\d+) records .*: (\d+) structured, (\d+) binary, (\d+) poison", output
    )
    assert match, output
    total, n_structured, n_binary, n_poison = map(int, match.groups())
    assert n_binary > 0
    assert n_poison > 0
    assert total == n_structured + n_binary + n_poison

    received = await _drain(settings, topic, total)
    assert len(received) == total
    kinds = Counter(
        "binary" if any(k == "ce_specversion" for k, _ in r.headers) else "structured"
        for r in received
    )
    # binary-mode poison messages carry ce_* headers too
    assert kinds["binary"] >= n_binary
    expected = list(
        plan(
            generate_keyed(customers=12, seed=4, tenant="acme"),
            seed=4, tenant="acme", binary_fraction=0.3, invalid_fraction=0.05,
        )
    )  # fmt: skip
    assert Counter(r.kind.partition(":")[0] for r in expected) == Counter(
        structured=n_structured, binary=n_binary, poison=n_poison
    )
    ids = {r.key for r in received}
    assert b"acme|sim-4-0" in ids


async def test_send_respects_the_rate(settings: CommonSettings) -> None:
    topic = f"test-sim-{uuid.uuid4().hex[:8]}.raw"
    await ensure_topics(settings, [topic], partitions=1)
    records = list(plan(generate_keyed(customers=10, seed=2, tenant="acme"), seed=2, tenant="acme"))
    records = records[:150]
    producer = make_producer(settings)
    await producer.start()
    try:
        started = time.monotonic()
        sent = await send(producer, topic, records, rate=500)
    finally:
        await producer.stop()
    assert sent["structured"] == 150
    assert time.monotonic() - started >= 0.25
    assert len(await _drain(settings, topic, 150)) == 150
