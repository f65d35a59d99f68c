"""``waypoint worker journey maps``: the map's compactor as a process of its own (a real process
on a real database) folds what the worker's chunks queued, serves its metrics, and stops on
SIGTERM; the journey worker no longer compacts unless asked to.

The process gets a database of its own (same server, migrated): the session's other compactors
(the worker fixtures') would otherwise fold some of the entries, and the test could not tell
who folded them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.journey.config import JourneySettings
from shared.db import Database, raw_connection
from shared.embedded import free_port
from tests.journey.conformance.support import BASE, MIN, Log
from tests.journey.maps.support import apply_chunk, email, envelope
from tests.journey.maps.support import own_database as fresh_database
from tests.support import TenantFactory, eventually

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def own_database(journey_settings: JourneySettings) -> AsyncIterator[tuple[Database, str]]:
    async with fresh_database(journey_settings.dsn) as opened:
        yield opened


async def _map_state(db: Database, tenant: str) -> tuple[int, int]:
    """(steps in the map, entries still queued) of ``tenant``."""
    async with db.session() as session:
        conn = await raw_connection(session)
        steps = await conn.fetchval(
            "SELECT count(*) FROM journey.map_step WHERE tenant_id = $1", tenant
        )
        pending = await conn.fetchval(
            "SELECT count(*) FROM journey.map_pending WHERE tenant_id = $1", tenant
        )
    return int(steps), int(pending)


async def _folded_by(port: int) -> float:
    """Events this process folded, from its own /metrics."""
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    for family in text_string_to_metric_families(body):
        if family.name == "waypoint_journey_map_events":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("result") == "folded"
            )
    return 0.0


async def test_the_maps_process_folds_what_the_worker_queued(
    own_database: tuple[Database, str], journey_settings: JourneySettings
):
    db, dsn = own_database
    tenant = await TenantFactory(db)()
    log = Log()
    for n, customer in enumerate(("a", "b", "c")):
        log.step(customer, n * MIN, "phone:ivr")
        log.step(customer, n * MIN + 30 * MIN, "web_chat:web_chat")
    items = [envelope(tenant.id, e, BASE, [email(tenant.id, e.customer)]) for e in log.events]
    await apply_chunk(db, journey_settings, items)  # the worker's chunk: stored and queued
    assert (await _map_state(db, tenant.id))[1] == len(items)

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "KAFKA_BOOTSTRAP_SERVERS": journey_settings.bootstrap_servers,
        "WAYPOINT_ENV": "test",
        "WAYPOINT_LOG_JSON": "false",
        "WAYPOINT_JOURNEY_MAP_POLL_SECONDS": "0.05",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "journey", "maps",
         "--metrics-port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        async def folded() -> bool:
            assert process.poll() is None, process.communicate()[0].decode()[-2000:]
            return await _map_state(db, tenant.id) == (6, 0)

        await eventually(folded, timeout=120, interval=0.2)
        # a background fold: it lowered its own CPU priority (map_nice, default 10)
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == os.getpriority(
            os.PRIO_PROCESS, 0
        ) + min(JourneySettings().map_nice, 19 - os.getpriority(os.PRIO_PROCESS, 0))

        async def counted() -> float:  # its metrics are served from the process
            try:
                return await _folded_by(port)
            except httpx.HTTPError:
                return 0.0

        assert await eventually(counted, timeout=30) == len(items)  # all of them, by this one
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
        assert code == 0, process.communicate()[0].decode()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_the_worker_leaves_the_map_to_the_maps_process_by_default():
    assert JourneySettings().map_compactor_in_worker is False
    assert JourneySettings().map_nice == 10
    assert JourneySettings(map_compactor_in_worker=True).map_compactor_in_worker is True
