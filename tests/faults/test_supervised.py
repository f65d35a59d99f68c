"""A crashed worker under ``waypoint run``: the journey worker is SIGKILLed while the
simulator's traffic flows; the supervisor restarts it (with backoff) and nothing is lost. The
stack runs on this session's PostgreSQL and broker (``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``),
with its own topics and groups, APIs on free ports."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime

import psutil
import pytest
from aiokafka import AIOKafkaProducer

from services.runner import METRICS_BASE_PORT
from shared.db import Database
from shared.embedded import free_port
from tests.faults.conftest import Baseline, Pipeline, check, running_pipeline
from tests.support import eventually

pytestmark = pytest.mark.timeout(900)


def port_offset() -> int:
    """An offset that puts 8001-8003 and the workers' metrics ports on free ports."""
    while True:
        base = free_port()
        offset = base - 8001
        ports = [8001 + offset + i for i in range(3)]
        ports += [METRICS_BASE_PORT + offset + i for i in range(6)]
        if offset > 0 and all(0 < port < 65536 for port in ports):
            return offset


def journey_worker(run: subprocess.Popen[bytes]) -> psutil.Process | None:
    for child in psutil.Process(run.pid).children(recursive=True):
        try:
            if child.cmdline()[-5:-2] == ["worker", "journey", "worker"]:
                return child
        except psutil.Error:
            continue
    return None


@pytest.fixture(scope="module")
async def supervised(
    infra: dict[str, str],
    db: Database,
    producer: AIOKafkaProducer,
    window_start: datetime,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Pipeline, subprocess.Popen[bytes]]]:
    logs = tmp_path_factory.mktemp("supervised")
    async with running_pipeline(infra, db, producer, window_start, logs, processes=()) as pipeline:
        command = ["run", "--no-demo", "--port-offset", str(port_offset())]
        run = pipeline.stack.spawn(command, "run", WAYPOINT_DATA_DIR=str(logs / "data"))
        try:
            yield pipeline, run
        finally:
            run.send_signal(signal.SIGINT)  # the clean stop: drain, then stop every child
            try:
                run.wait(timeout=120)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait()


async def test_a_crashed_worker_under_waypoint_run_comes_back_with_nothing_lost(
    supervised: tuple[Pipeline, subprocess.Popen[bytes]], baseline: Baseline
) -> None:
    p, run = supervised
    log = p.stack.logs / "run.log"

    async def up() -> psutil.Process | None:
        assert run.poll() is None, log.read_text()[-3000:]
        return journey_worker(run) if "partitions.assigned" in log.read_text() else None

    first = await eventually(up, timeout=400, interval=0.2)
    _, traffic = await p.sent_tenant()

    async def busy() -> bool:
        return "journey" in log.read_text() and (await p.result(traffic))[0].applied >= 20

    await eventually(busy, timeout=400, interval=0.2)
    first.kill()  # SIGKILL

    async def restarted() -> bool:
        again = journey_worker(run)
        return again is not None and again.pid != first.pid

    await eventually(restarted, timeout=120, interval=0.2)
    await p.settle_all(traffic)
    found, snap = await p.result(traffic)
    assert run.poll() is None, "the supervisor must not stop the world"
    assert "journey-worker exited with status -9; restarting" in log.read_text()
    check("journey worker SIGKILLed under waypoint run", found, snap, baseline)
