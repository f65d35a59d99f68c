"""SIGKILL of each worker at each point of its batch: before the store, after the store but
before publishing, after publishing but before the offset commit (see shared/faults.py). The
killed process is started again without the fault; nothing may be lost or applied twice."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

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
    # the outbox relay (in the journey worker process): published, not yet deleted
    ("journey", "journey-outbox:after_publish:1"),
    ("notifier", "notifier:after_claim:3"),
    ("notifier", "notifier:after_deliver:3"),
]


@pytest.mark.parametrize(("process", "crash_at"), CRASH_POINTS, ids=[c for _, c in CRASH_POINTS])
async def test_sigkill_at_a_crash_point_loses_and_repeats_nothing(
    pipeline: Pipeline, baseline: Baseline, process: str, crash_at: str
) -> None:
    pipeline.stack.stop(process)  # the clean one hands its partitions over
    faulted = pipeline.stack.start(process, crash_at=crash_at)
    _, traffic = await pipeline.sent_tenant()

    async def crashed() -> bool:
        return pipeline.stack.crashed(faulted)

    try:
        await eventually(crashed, timeout=400, interval=0.1)
    finally:
        # The pipeline is the session's: never leave an armed process to the next scenario.
        if faulted.poll() is None:
            faulted.kill()
            faulted.wait()
        pipeline.stack.start(process)  # as a supervisor would
    await pipeline.settle_all(traffic)
    found, snap = await pipeline.result(traffic)
    check(f"SIGKILL {crash_at.rsplit(':', 1)[0]}", found, snap, baseline)


# The decay scheduler, made to rescore at once (every customer scored over a second ago, a pass
# every second), SIGKILLed in its first pass: with a batch rescored but not committed, and with
# a batch committed but the pass not finished.
RESCORE_NOW = {
    "WAYPOINT_ALERTS_RESCORE_AFTER_SECONDS": "1",
    "WAYPOINT_ALERTS_RESCORE_INTERVAL_SECONDS": "1",
}
SCHEDULER_POINTS = ["scheduler:before_store:1", "scheduler:after_store:1"]


async def scored_since(p: Pipeline, tenant: str, since: datetime) -> tuple[int, int]:
    """(customers of ``tenant`` alerts scores, those of them scored at or after ``since``);
    a customer merged into another is no longer scored."""
    async with p.db.session() as session:
        row = (
            await session.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE scored_at >= :s) "
                    "FROM alerts.customer_state WHERE tenant_id = :t AND merged_into IS NULL"
                ),
                {"t": tenant, "s": since},
            )
        ).one()
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("crash_at", SCHEDULER_POINTS)
async def test_sigkill_of_the_scheduler_mid_pass_loses_and_repeats_nothing(
    pipeline: Pipeline, baseline: Baseline, crash_at: str
) -> None:
    p = pipeline
    tenant, traffic = await p.settled_tenant()
    p.stack.stop("scheduler")
    faulted = p.stack.start("scheduler", crash_at=crash_at, **RESCORE_NOW)

    async def crashed() -> bool:
        return p.stack.crashed(faulted)

    try:
        await eventually(crashed, timeout=300, interval=0.1)
    except AssertionError:  # never leave an armed process to the next scenario
        faulted.kill()
        faulted.wait()
        p.stack.start("scheduler")
        raise
    restarted_at = datetime.now(UTC)
    p.stack.start("scheduler", **RESCORE_NOW)  # as a supervisor would

    async def rescored() -> bool:  # a whole pass after the crash reached every customer
        known, since = await scored_since(p, tenant.id, restarted_at)
        return known > 0 and since == known

    await eventually(rescored, timeout=300, interval=0.2)
    p.stack.stop("scheduler")
    p.stack.start("scheduler")  # the module's own, for the scenarios after this one
    await p.settle_all(traffic)
    found, snap = await p.result(traffic)
    check(f"SIGKILL {crash_at.rsplit(':', 1)[0]}", found, snap, baseline)
