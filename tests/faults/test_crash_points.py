"""SIGKILL of each worker at each point of its batch: before the store, after the store but
before publishing, after publishing but before the offset commit (see shared/faults.py). The
killed process is started again without the fault; nothing may be lost or applied twice."""

from __future__ import annotations

import pytest

from tests.faults.conftest import Baseline, Pipeline, check
from tests.support import eventually

pytestmark = pytest.mark.timeout(900)  # a loaded, shared machine starts processes slowly

CRASH_POINTS = [
    ("ingest", "ingest:before_store:2"),
    ("ingest", "ingest:after_store:2"),
    ("ingest", "ingest:before_commit:2"),
    ("journey", "journey:before_store:3"),
    ("journey", "journey:after_publish:3"),
    ("journey", "journey:before_commit:1"),
    ("alerts", "alerts:before_store:1"),
    ("alerts", "alerts:before_commit:1"),
    ("engagement", "journey-engagement:before_commit:1"),
    ("notifier", "notifier:after_claim:3"),
    ("notifier", "notifier:after_deliver:3"),
]


@pytest.mark.parametrize(("process", "crash_at"), CRASH_POINTS, ids=[c for _, c in CRASH_POINTS])
async def test_sigkill_at_a_crash_point_loses_and_repeats_nothing(
    pipeline: Pipeline, baseline: Baseline, process: str, crash_at: str
) -> None:
    pipeline.stack.stop(process)  # the clean one hands its partitions over
    faulted = pipeline.stack.start(process, crash_at=crash_at)
    tenant = await pipeline.tenant()
    traffic = pipeline.traffic(tenant)
    await pipeline.send(traffic)

    async def crashed() -> bool:
        return pipeline.stack.crashed(faulted)

    await eventually(crashed, timeout=400, interval=0.1)
    pipeline.stack.start(process)  # as a supervisor would
    await pipeline.settle(tenant.id, expect_stored=len(traffic.event_ids))
    found, snap = await pipeline.result(traffic)
    check(f"SIGKILL {crash_at.rsplit(':', 1)[0]}", found, snap, baseline)
