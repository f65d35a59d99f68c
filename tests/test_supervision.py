"""The pieces of a clean stop and of healing, on the real broker and database: consumer-group
lag read without joining the group, the restart budget, replay from the event store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from services.drain import Group, GroupProbe, groups_of, wait_until_drained
from services.supervisor import RestartPolicy
from shared.kafka import ensure_topics, make_consumer
from tests.support import cloud_event, eventually


def test_restarts_back_off_and_give_up_after_too_many_crashes_in_the_window() -> None:
    policy = RestartPolicy(max_restarts=3, window=60, first_delay=1, max_delay=3)
    assert [policy.after_crash(t) for t in (0, 1, 2)] == [1, 2, 3]
    assert policy.after_crash(3) is None  # a 4th crash within a minute: give up
    calm = RestartPolicy(max_restarts=3, window=60)
    assert [calm.after_crash(t) for t in (0, 100, 200, 300, 400)] == [1, 1, 1, 1, 1]


def test_groups_come_from_each_service_settings_in_pipeline_order(settings: Any) -> None:
    from services.alerts.config import AlertsSettings
    from services.ingest.config import IngestSettings
    from services.journey.config import JourneySettings

    infra = {"database_url": settings.database_url,
             "kafka_bootstrap_servers": settings.kafka_bootstrap_servers}  # fmt: skip
    groups = groups_of(
        {
            "ingest": IngestSettings(**infra),
            "journey": JourneySettings(**infra),
            "alerts": AlertsSettings(**infra),
        }
    )
    assert [(g.service, g.group_id, g.topics) for g in groups] == [
        ("ingest", "waypoint-ingest", ("waypoint.events.raw",)),
        ("journey", "waypoint-journey", ("waypoint.events.normalized",)),
        (
            "journey/engagement_consumer_group",
            "waypoint-journey-engagement",
            ("waypoint.customer.engagement",),
        ),
        ("alerts", "waypoint-alerts", ("waypoint.customer.activity",)),
    ]
    assert "waypoint.events.normalized" in groups[0].candidates


async def test_lag_is_what_a_group_has_not_committed_read_without_joining(
    settings: Any, producer: Any
) -> None:
    topic = f"test-drain-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=2)
    for i in range(10):
        await producer.send_and_wait(topic, b"x", key=str(i).encode(), partition=i % 2)
    group = Group("svc", f"g-{uuid.uuid4().hex[:8]}", (topic,))
    probe = GroupProbe(settings.bootstrap_servers, group)
    await probe.start()
    try:
        assert await probe.lag() == 10  # nothing committed yet
        member = make_consumer(settings, topic, group_id=group.group_id)
        await member.start()
        try:
            await member.getmany(timeout_ms=3000)  # joins the group, reads
            await member.commit({TopicPartition(topic, 0): 4, TopicPartition(topic, 1): 5})
            assert await probe.lag() == 1
            await member.commit({TopicPartition(topic, 0): 5})
            assert await probe.lag() == 0
            assert member.assignment()  # the probe never took partitions from the member

            reports: list[dict[str, int]] = []
            await producer.send_and_wait(topic, b"late", partition=0)
            left = await wait_until_drained(
                settings.bootstrap_servers,
                [group],
                timeout=0.5,
                report=lambda lags, _s: reports.append(lags),
                report_every=0.1,
            )
            assert left == {"svc": 1}  # bounded: returns with what is left
            assert reports
            assert reports[-1] == {"svc": 1}
        finally:
            await member.stop()
    finally:
        await probe.stop()


async def test_replay_from_store_republishes_stored_events_by_tenant_and_time(
    settings_overrides: dict[str, Any], db: Any, make_tenant: Any
) -> None:
    from services.ingest.config import IngestSettings
    from services.ingest.records import store_row
    from services.ingest.replay import Selection, TimeField, replay
    from services.ingest.repository import store_events
    from shared.events import validate_event

    tenant, other = await make_tenant(), await make_tenant()
    now = datetime.now(UTC)
    rows = []
    for owner, hours_ago in ((tenant, 30), (tenant, 2), (tenant, 1), (other, 1)):
        raw = cloud_event(tenant=owner.id, time=now - timedelta(hours=hours_ago))
        envelope = validate_event(raw, now=now, phone_region="US", max_future=timedelta(hours=1))
        rows.append(store_row(envelope, envelope.to_json(), now - timedelta(hours=hours_ago)))
    async with db.session() as session:
        await store_events(session, rows)

    topic = f"test-replay-{uuid.uuid4().hex[:8]}"
    settings = IngestSettings(**{**settings_overrides, "topic_normalized": topic})
    await ensure_topics(settings, [topic])
    recent = Selection(tenant=tenant.id, since=now - timedelta(hours=3), field=TimeField.received)
    assert await replay(settings, recent, dry_run=True) == {tenant.id: 2}
    seen: list[tuple[int, int]] = []
    assert await replay(settings, recent, progress=lambda d, t: seen.append((d, t))) == {
        tenant.id: 2
    }
    assert seen[-1] == (2, 2)

    reader = make_consumer(settings, topic, group_id=f"g-{uuid.uuid4().hex[:8]}")
    await reader.start()
    try:
        got: list[Any] = []

        async def two() -> bool:
            batches = await reader.getmany(timeout_ms=500)
            got.extend(r for records in batches.values() for r in records)
            assert len(got) >= 2
            return True

        await eventually(two, timeout=20)
    finally:
        await reader.stop()
    published = sorted(r.value for r in got)
    assert published == sorted(row[8].encode() for row in rows[1:3])  # exactly as stored
    assert {r.key for r in got} == {f"{tenant.id}|".encode() + r[7][0].encode() for r in rows[1:3]}


async def test_a_child_that_keeps_crashing_makes_the_supervisor_give_up() -> None:
    import asyncio
    import os

    from services.supervisor import Child, Kind, Supervisor

    reasons: list[str] = []
    gave_up = asyncio.Event()

    def give_up(reason: str) -> None:
        reasons.append(reason)
        gave_up.set()

    supervisor = Supervisor(dict(os.environ), on_give_up=give_up)
    policy = RestartPolicy(max_restarts=2, window=60, first_delay=0.1)
    crashing = Child("broken-worker", ["no-such-command"], Kind.worker, "31", policy)
    await supervisor.add(crashing)
    try:
        await asyncio.wait_for(gave_up.wait(), 60)
    finally:
        await supervisor.close()
    assert crashing.restarts == 2
    assert reasons == ["broken-worker crashed 3 times within 60s (last exit status 2); giving up"]


def test_a_broker_left_by_a_killed_run_is_stopped_before_a_new_start(tmp_path: Any) -> None:
    from shared.embedded import Broker, free_port, start_broker

    port = free_port()
    stale = start_broker(port, data_dir=tmp_path)
    try:
        fresh = Broker(port=port, data_dir=tmp_path)
        fresh.reap_stale()
        assert stale.process is not None
        assert stale.process.wait(timeout=10) is not None
        fresh.start()  # the same port is free again
        fresh.stop()
    finally:
        stale.stop()


async def test_the_broker_dies_with_the_process_that_started_it(tmp_path: Any) -> None:
    import asyncio
    import signal
    import subprocess
    import sys

    import psutil

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from shared.embedded import start_broker\n"
        "broker = start_broker(data_dir=Path(sys.argv[1]))\n"
        "print(broker.process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        broker_pid = int(await asyncio.to_thread(parent.stdout.readline))
        assert psutil.pid_exists(broker_pid)
        parent.send_signal(signal.SIGKILL)  # no chance to clean up

        async def gone() -> bool:
            try:
                return psutil.Process(broker_pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        await eventually(gone, timeout=10)
    finally:
        parent.kill()
        parent.wait()
