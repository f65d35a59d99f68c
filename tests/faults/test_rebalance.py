"""A rebalance storm: while traffic flows, workers of every consumer group join and leave every
few seconds (a clean stop, or a SIGKILL), on topics of two partitions, so partitions move
between members mid-batch. Nothing may be lost or applied twice.

Two partitions give no single order of application across customers, so the context is
counted here (stored, applied, scored, delivered) but not compared with the one-partition
baseline (docs/reliability.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from shared.db import Database
from tests.faults.conftest import Baseline, Pipeline, check, running_pipeline
from tests.support import eventually

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
async def two_partitions(
    infra: dict[str, str],
    db: Database,
    producer: AIOKafkaProducer,
    window_start: datetime,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Pipeline]:
    logs: Path = tmp_path_factory.mktemp("rebalance")
    two = {"WAYPOINT_TOPIC_PARTITIONS": "2"}
    async with running_pipeline(infra, db, producer, window_start, logs, **two) as opened:
        yield opened


async def test_a_rebalance_storm_loses_and_repeats_nothing(
    two_partitions: Pipeline, baseline: Baseline
) -> None:
    p = two_partitions
    tenant = await p.tenant()
    traffic = p.traffic(tenant)
    chunks = 6
    size = len(traffic.records) // chunks + 1
    storm = ("ingest", "journey", "alerts")

    def assignments() -> int:
        return sum(p.stack.log(n).count("partitions.assigned") for n in storm)

    for step in range(chunks):
        before = assignments()
        joined = p.stack.start(storm[step % len(storm)])  # a member joins: a rebalance

        async def rebalanced(before: int = before) -> bool:
            return assignments() > before

        await eventually(rebalanced, timeout=300, interval=0.2)
        await p.send(traffic, traffic.records[step * size : (step + 1) * size])
        if step % 2 == 0:
            joined.kill()  # leaves without a word: its partitions wait out its session
        else:
            joined.terminate()  # leaves cleanly, after its batch in flight
    await p.settle_all(traffic)
    found, snap = await p.result(traffic)
    check("rebalance storm (6 joins, 3 SIGKILLs, 3 clean leaves)", found, snap, baseline,
          compare=False)  # fmt: skip
