"""A rebalance storm: while traffic flows, workers of every consumer group join and leave every
few seconds (a clean stop, or a SIGKILL), on topics of two partitions, so partitions move
between members mid-batch. Nothing may be lost or applied twice.

Two partitions give no single order of application across customers, so the context is
counted here (stored, applied, scored, delivered) but not compared with the one-partition
baseline (docs/reliability.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from shared.db import Database
from tests.faults.conftest import Baseline, Pipeline, check, close_pipeline, open_pipeline

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
    opened = await open_pipeline(
        infra, db, producer, window_start, logs, WAYPOINT_TOPIC_PARTITIONS="2"
    )
    try:
        yield opened
    finally:
        close_pipeline(opened)


async def test_a_rebalance_storm_loses_and_repeats_nothing(
    two_partitions: Pipeline, baseline: Baseline
) -> None:
    p = two_partitions
    tenant = await p.tenant()
    traffic = p.traffic(tenant)
    chunks = 8
    size = len(traffic.records) // chunks + 1
    storm = ("ingest", "journey", "alerts")
    for step in range(chunks):
        await p.send(traffic, traffic.records[step * size : (step + 1) * size])
        name = storm[step % len(storm)]
        if step % 2 == 0:
            p.stack.start(name)  # joins: the group rebalances
        else:
            extra = p.stack.running(name)
            if len(extra) > 1:  # leaves: a SIGKILL every other time, else a clean stop
                extra[-1].kill() if step % 4 == 1 else extra[-1].terminate()
        await asyncio.sleep(2.5)  # the storm's pace (not a wait for a condition)
    for name in storm:  # one of each stays; the extra ones leave cleanly
        for extra in p.stack.running(name)[1:]:
            extra.terminate()
    await p.settle(tenant.id, expect_stored=len(traffic.event_ids))
    found, snap = await p.result(traffic)
    check("rebalance storm (joins, leaves, SIGKILLs)", found, snap, baseline, compare=False)
    revoked = sum(p.stack.log(n).count("partitions.revoked") for n in storm)
    assert revoked >= len(storm) * 2, "the storm should have moved partitions"
