"""Test infrastructure: a real PostgreSQL and a real Kafka-protocol broker.

The embedded ones start once per session unless ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS``
name others. Migrations run once. Tests are isolated by tenant (every row carries one) and by
per-session topic names, so workers and consumers of concurrent tests never mix data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from shared.config import CommonSettings
from shared.db import Database
from shared.kafka import ensure_topics, make_producer
from shared.migrations import upgrade
from tests.support import TenantFactory


@pytest.fixture(scope="session")
def infra() -> Iterator[dict[str, str]]:
    """DSN and bootstrap servers of the real components under test."""
    from shared.embedded import Infrastructure

    tmp = Path(tempfile.mkdtemp(prefix="waypoint-test-"))
    infra = Infrastructure.start(
        tmp,
        database_url=os.environ.get("DATABASE_URL"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
    )
    try:
        yield {
            "database_url": infra.database_url,
            "kafka_bootstrap_servers": infra.kafka_bootstrap_servers,
        }
    finally:
        infra.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def settings_overrides(infra: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments for any service's settings class: real infra, this session's topics."""
    run = uuid.uuid4().hex[:8]
    return {
        **infra,
        "env": "test",
        "log_json": False,
        "topic_raw": f"test-{run}.events.raw",
        "topic_normalized": f"test-{run}.events.normalized",
        "topic_dead_letter": f"test-{run}.events.deadletter",
        "topic_activity": f"test-{run}.customer.activity",
        "topic_engagement": f"test-{run}.customer.engagement",
        "topic_privacy": f"test-{run}.privacy.erasure",
        "topic_partitions": 4,
        "api_key_cache_seconds": 0.0,
        # Limits far above any test's traffic: every test process shares one counter store and
        # one client IP. tests/shared/test_rate_limits.py sets its own low limits.
        "rate_limit_key_reads": 10_000_000,
        "rate_limit_key_writes": 10_000_000,
        "rate_limit_tenant_reads": 10_000_000,
        "rate_limit_tenant_writes": 10_000_000,
        "rate_limit_auth_failures": 10_000_000,
        # The map compactor folds a customer at once instead of after the 1 s settle delay:
        # every test that waits for the map would wait that much longer, and none of them is
        # about the delay. tests/journey/maps/test_settle.py passes its own settle and cap;
        # tests/journey/maps/test_process.py runs `journey maps` with the defaults.
        "map_settle_seconds": 0.0,
        "map_batch_interval_seconds": 0.0,  # the same for the pause between batches
        "data_dir": Path(tempfile.mkdtemp(prefix="waypoint-data-")),
    }


@pytest.fixture(scope="session")
def settings(settings_overrides: dict[str, Any]) -> CommonSettings:
    return CommonSettings(**settings_overrides)


@pytest.fixture(scope="session")
async def db(settings: CommonSettings) -> AsyncIterator[Database]:
    database = Database(settings.dsn, pool_size=5, application_name="tests")
    await upgrade(database)
    await ensure_topics(settings)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
async def producer(settings: CommonSettings, db: Database) -> AsyncIterator[AIOKafkaProducer]:
    kafka = make_producer(settings)
    await kafka.start()
    yield kafka
    await kafka.stop()


@pytest.fixture
def now() -> datetime:
    """The real clock, read once when the test starts (whole seconds, UTC).

    Derive every time in a test from it: no test may depend on today's date (`make test-future`
    runs the suite with the clock a year ahead to prove it)."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def make_tenant(db: Database) -> TenantFactory:
    """``await make_tenant(scopes=[...])`` → a fresh tenant with an API key of those scopes."""
    return TenantFactory(db)
