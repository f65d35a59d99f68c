"""The worker's batch handler: bad records are dead-lettered with a reason, good ones in the same
batch are applied, and nothing stalls."""

from __future__ import annotations

import uuid
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from sqlalchemy import text

from services.alerts.config import AlertsSettings
from services.alerts.worker import ActivityHandler
from shared.db import Database
from shared.kafka import make_consumer
from tests.alerts.conftest import T0, Clock, usage
from tests.support import TenantFactory, eventually


def record(value: bytes, offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        topic="activity", partition=0, offset=offset, timestamp=0, timestamp_type=0, key=b"k",
        value=value, checksum=None, serialized_key_size=1, serialized_value_size=len(value),
        headers=[],
    )  # fmt: skip


async def test_bad_records_are_dead_lettered_and_the_rest_applied(
    alerts_settings: AlertsSettings,
    db: Database,
    producer: AIOKafkaProducer,
    make_tenant: TenantFactory,
):
    tenant = (await make_tenant()).id
    marker = uuid.uuid4().hex
    good = [usage(tenant=tenant, customer=f"ok-{i}", at=T0, active=5) for i in range(2)]
    overflow = usage(tenant=tenant, customer="huge", at=T0, active=10**12)  # not an int4
    long_owner = usage(tenant=tenant, customer="owner", at=T0, active=1,
                       traits={"csm_owner": "x" * 500})  # fmt: skip
    too_long = usage(tenant=tenant, customer="y" * 300, at=T0, active=5)
    no_event = usage(tenant=tenant, customer="z", at=T0, active=5).model_copy(
        update={"event": None}
    )
    values = [
        good[0].to_json(),
        b"[" + marker.encode() + b"]",  # not an activity at all
        overflow.to_json(),
        too_long.to_json(),
        no_event.to_json(),
        long_owner.to_json(),
        good[1].to_json(),
    ]
    handler = ActivityHandler(alerts_settings, db, producer, Clock(T0 + timedelta(days=60)))
    await handler([record(v, i) for i, v in enumerate(values)])

    async with db.session() as session:
        customers = (
            await session.execute(
                text(
                    "SELECT customer_id FROM alerts.customer_state WHERE tenant_id = :t "
                    "ORDER BY customer_id"
                ),
                {"t": tenant},
            )
        ).scalars()
        owners = (
            await session.execute(
                text("SELECT owner FROM alerts.alert WHERE tenant_id = :t"), {"t": tenant}
            )
        ).scalars()
        assert list(customers) == ["ok-0", "ok-1", "owner"]
        assert [len(o) for o in owners] == [128]

    dead = make_consumer(alerts_settings, alerts_settings.topic_dead_letter,
                         group_id=f"dlq-{uuid.uuid4().hex[:6]}")  # fmt: skip
    await dead.start()
    wanted = {values[i]: None for i in (1, 2, 3, 4)}
    try:

        async def collected():
            for batch in (await dead.getmany(timeout_ms=500)).values():
                for r in batch:
                    if r.value in wanted:
                        wanted[r.value] = dict(r.headers)["waypoint-error"].decode()
            return all(wanted.values())

        await eventually(collected)
    finally:
        await dead.stop()
    errors = list(wanted.values())
    assert "JSON" in errors[0] or "object" in errors[0]
    assert "DataError" in errors[1]
    assert "1-256 characters" in errors[2]
    assert "normalized event" in errors[3]
