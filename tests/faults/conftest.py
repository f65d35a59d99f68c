"""Fixtures of the fault suite: a fault-free baseline run, pipelines of real worker processes
(one per session, shared by the baseline and most scenarios, each scenario on its own tenant;
the modules that need another kind of stack start their own), a counting
webhook receiver, and the table of results (printed, and written to ``$WAYPOINT_FAULTS_TABLE``
when set)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.alerts.app import create_app as create_alerts_app
from services.alerts.config import AlertsSettings
from shared.db import Database
from shared.kafka import ensure_topics
from tests.faults.checks import Outcome, Snapshot, Traffic, outcome, settled, snapshot
from tests.faults.receiver import Receiver
from tests.faults.stack import PROCESSES, Stack
from tests.support import TenantFactory, TestTenant, app_client

# A model under which a good share of the simulated customers end up alerted, so deliveries
# are counted on every scenario.
MODEL = {
    "weights": {"activity": 50, "utilisation": 50, "cases": 0, "friction": 0,
                "satisfaction": 0, "sentiment": 0},
    "thresholds": {"alert_below": 60, "rearm_margin": 10, "cooldown_hours": 24,
                   "drop_points": 15, "drop_days": 10},
}  # fmt: skip

RESULTS: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not RESULTS:
        return
    header = (
        "| scenario | events in | stored | applied | scored | alerts | delivered "
        "| duplicated | lost |\n|---|---|---|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *RESULTS])
    target = os.environ.get("WAYPOINT_FAULTS_TABLE")
    if target:
        Path(target).write_text(table + "\n")
    print("\n" + table)  # noqa: T201 - the suite's report


@pytest.fixture(scope="session")
def window_start() -> datetime:
    """The simulated traffic's 30-day window, the same in every scenario (read once)."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)


@dataclass
class Pipeline:
    """One stack of worker processes and what a scenario needs around it."""

    stack: Stack
    db: Database
    producer: AIOKafkaProducer
    tenants: TenantFactory
    window_start: datetime
    receiver: Receiver

    async def tenant(self) -> TestTenant:
        """A tenant with the alerting model and a webhook to the receiver."""
        tenant = await self.tenants()
        settings = AlertsSettings(**self.stack.overrides())
        async with app_client(create_alerts_app(settings)) as api:
            r = await api.put("/v1/engagement-model", json=MODEL, headers=tenant.headers)
            assert r.status_code == 200, r.text
            hook = {"name": "hook", "type": "webhook", "url": self.receiver.url,
                    "secret": "fault-suite-webhook-secret"}  # fmt: skip
            r = await api.put(
                "/v1/notification-channels", json={"channels": [hook]}, headers=tenant.headers
            )
            assert r.status_code == 200, r.text
        return tenant

    def traffic(self, tenant: TestTenant, **kwargs: Any) -> Traffic:
        return Traffic.simulated(tenant.id, self.window_start, **kwargs)

    async def send(self, traffic: Traffic, records: Any = None) -> None:
        await traffic.send(self.producer, self.stack.topic("raw"), records)

    async def settle(self, tenant: str, **kwargs: Any) -> None:
        await settled(self.stack, self.db, tenant, **kwargs)

    async def settle_all(self, traffic: Traffic) -> None:
        """Wait until the pipeline is quiet with every event of ``traffic`` stored."""
        await self.settle(traffic.tenant, expect_stored=len(traffic.event_ids))

    async def sent_tenant(self) -> tuple[TestTenant, Traffic]:
        """A new tenant (``tenant``) with its simulated traffic sent to the raw topic."""
        tenant = await self.tenant()
        traffic = self.traffic(tenant)
        await self.send(traffic)
        return tenant, traffic

    async def settled_tenant(self) -> tuple[TestTenant, Traffic]:
        """A new tenant whose traffic has gone all the way through the pipeline (settled)."""
        tenant, traffic = await self.sent_tenant()
        await self.settle_all(traffic)
        return tenant, traffic

    async def result(self, traffic: Traffic, **kwargs: Any) -> tuple[Outcome, Snapshot]:
        return (
            await outcome(self.db, traffic, self.receiver, **kwargs),
            await snapshot(self.db, traffic.tenant),
        )


@asynccontextmanager
async def running_pipeline(
    infra: dict[str, str],
    db: Database,
    producer: AIOKafkaProducer,
    window_start: datetime,
    logs: Path,
    *,
    processes: tuple[str, ...] | None = None,
    **env: str,
) -> AsyncIterator[Pipeline]:
    """A stack of ``processes`` (default: every worker) and a receiver, closed on the way out."""
    stack = Stack.create(infra, logs, **env)
    await ensure_topics(AlertsSettings(**stack.overrides()))
    receiver = Receiver()
    receiver.up()
    try:
        for name in PROCESSES if processes is None else processes:
            stack.start(name)
        yield Pipeline(stack, db, producer, TenantFactory(db), window_start, receiver)
    finally:
        stack.close()
        receiver.close()


@pytest.fixture(scope="session")
async def shared_pipeline(
    infra: dict[str, str],
    db: Database,
    producer: AIOKafkaProducer,
    window_start: datetime,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Pipeline]:
    """Every worker process of the pipeline, started once per session: the baseline and the
    modules without a stack of their own share it (each scenario on its own tenant). Starting
    six worker processes costs tens of seconds on a loaded 2-core machine."""
    logs = tmp_path_factory.mktemp("faults")
    async with running_pipeline(infra, db, producer, window_start, logs) as opened:
        yield opened


@pytest.fixture
def pipeline(shared_pipeline: Pipeline) -> Pipeline:
    return shared_pipeline


@dataclass
class Baseline:
    outcome: Outcome
    snapshot: Snapshot


@pytest.fixture(scope="session")
async def baseline(shared_pipeline: Pipeline) -> Baseline:
    """The same simulated input through the fault-free pipeline (the first thing the shared
    pipeline does, before any scenario)."""
    clean = shared_pipeline
    _, traffic = await clean.settled_tenant()
    found, snap = await clean.result(traffic)
    assert not any(found.lost.values()), found
    assert not any(found.duplicated.values()), found
    assert found.alerts > 0, "the baseline should open alerts (see MODEL)"
    RESULTS.append(found.row("baseline (no fault)"))
    return Baseline(found, snap)


def check(
    scenario: str, found: Outcome, snap: Snapshot, baseline: Baseline, *, compare: bool = True
) -> None:
    """0 lost and 0 duplicated at every stage; the context as in the fault-free run."""
    RESULTS.append(found.row(scenario))
    assert not any(found.lost.values()), (scenario, found)
    assert not any(found.duplicated.values()), (scenario, found)
    if compare:
        assert found.alerts == baseline.outcome.alerts, (found.alerts, baseline.outcome.alerts)
        differences = snap.differences(baseline.snapshot)
        assert not differences, "\n".join(differences[:10])


@pytest.fixture
def receiver_up(pipeline: Pipeline) -> Iterator[Receiver]:
    pipeline.receiver.slow_seconds = 0
    pipeline.receiver.up()
    yield pipeline.receiver
    pipeline.receiver.slow_seconds = 0
    pipeline.receiver.up()
