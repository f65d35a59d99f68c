"""The engine on real PostgreSQL: replays change nothing, the decay scheduler alerts quiet
customers, merges fold state, churn outcomes record lead times."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text

from services.alerts.scheduler import rescore_due
from shared.db import Database
from tests.alerts.conftest import T0, activity, apply, usage
from tests.support import TenantFactory


async def _state(db: Database, tenant: str, customer: str):
    async with db.session() as session:
        return (
            await session.execute(
                text(
                    "SELECT score, activity, open_alert_id, merged_into, "
                    "(SELECT count(*) FROM alerts.score_history h WHERE h.tenant_id = s.tenant_id "
                    " AND h.customer_id = s.customer_id) AS history "
                    "FROM alerts.customer_state s WHERE tenant_id = :t AND customer_id = :c"
                ),
                {"t": tenant, "c": customer},
            )
        ).first()


async def _alerts(db: Database, tenant: str, customer: str):
    async with db.session() as session:
        return (
            await session.execute(
                text(
                    "SELECT id, status, rule, resolution, owner, explanation FROM alerts.alert "
                    "WHERE tenant_id = :t AND customer_id = :c ORDER BY opened_at"
                ),
                {"t": tenant, "c": customer},
            )
        ).all()


async def test_replayed_activities_change_nothing(db: Database, make_tenant: TenantFactory):
    tenant = (await make_tenant()).id
    batch = [usage(tenant=tenant, customer="c1", at=T0 + timedelta(hours=h), active=3)
             for h in range(5)]  # fmt: skip
    first = await apply(db, batch + batch[:2], now=T0 + timedelta(hours=5))
    assert (first.applied, first.duplicates) == (5, 2)  # duplicates inside a batch apply once
    before = await _state(db, tenant, "c1")
    replay = await apply(db, batch, now=T0 + timedelta(days=3))
    assert (replay.applied, replay.duplicates) == (0, 5)
    assert await _state(db, tenant, "c1") == before


async def test_a_customer_who_goes_quiet_is_alerted_by_the_decay_scheduler(
    db: Database, make_tenant: TenantFactory
):
    tenant = (await make_tenant()).id
    customer = f"quiet-{uuid.uuid4().hex[:6]}"
    await apply(
        db,
        [activity(tenant=tenant, customer=customer, type="product.used", feature="login",
                  at=T0 - timedelta(hours=h), traits={"csm_owner": "ana"}) for h in range(10)],
        now=T0,
    )  # fmt: skip
    healthy = await _state(db, tenant, customer)
    assert healthy.score > 60

    # a week of silence: lower, not yet alarming; scheduler pass leaves fresh customers alone
    week = await rescore_due(db, now=T0 + timedelta(days=7), stale_after=timedelta(hours=1),
                             tenant_id=tenant)  # fmt: skip
    assert week == 1
    assert (await _state(db, tenant, customer)).score < healthy.score
    assert await _alerts(db, tenant, customer) == []
    assert await rescore_due(db, now=T0 + timedelta(days=7, minutes=5),
                             stale_after=timedelta(hours=1), tenant_id=tenant) == 0  # fmt: skip

    # three months of silence: the same rules open an alert that explains the decay
    later = T0 + timedelta(days=90)
    assert await rescore_due(db, now=later, stale_after=timedelta(hours=1), tenant_id=tenant) == 1
    quiet = await _state(db, tenant, customer)
    assert quiet.score < 40
    [alert] = await _alerts(db, tenant, customer)
    assert alert.status == "open"
    explanation = alert.explanation
    assert explanation["cause"] == "decay"
    assert explanation["factors"]["activity"] < 0.1
    assert explanation["recent_events"][-1]["type"] == "product.used"
    assert alert.owner == "ana"
    assert quiet.open_alert_id == alert.id


async def test_merge_folds_the_merged_customer_and_closes_its_alert(
    db: Database, make_tenant: TenantFactory
):
    tenant = (await make_tenant()).id
    await apply(db, [usage(tenant=tenant, customer="a", at=T0, active=10) for _ in range(4)]
                + [usage(tenant=tenant, customer="b", at=T0, active=10) for _ in range(12)],
                now=T0)  # fmt: skip
    later = T0 + timedelta(days=60)
    opened = await apply(db, [usage(tenant=tenant, customer="b", at=later, active=0)], now=later)
    assert len(opened.opened) == 1
    merged = await apply(
        db,
        [activity(tenant=tenant, customer="a", type="product.used", at=later)]
        + [
            activity(tenant=tenant, customer="a", type="product.used", at=later).model_copy(
                update={"kind": "merged", "event": None, "merged_ids": ["b"]}
            )
        ],
        now=later,
    )
    assert merged.applied == 2
    a, b = await _state(db, tenant, "a"), await _state(db, tenant, "b")
    assert b.merged_into == "a"
    assert b.open_alert_id is None
    assert a.activity > 1.0 + 0.5  # b's decayed usage came along
    [closed] = await _alerts(db, tenant, "b")
    assert (closed.status, closed.resolution) == ("resolved", "merged")


async def test_churn_outcomes_record_reasons_and_alert_lead_time(
    db: Database, make_tenant: TenantFactory
):
    tenant = (await make_tenant()).id
    await apply(db, [usage(tenant=tenant, customer="x", at=T0, active=10,
                           traits={"tier": "gold"}) for _ in range(12)], now=T0)  # fmt: skip
    alert_at = T0 + timedelta(days=60)
    effects = await apply(db, [usage(tenant=tenant, customer="x", at=alert_at, active=0)],
                          now=alert_at)  # fmt: skip
    assert len(effects.opened) == 1
    churned_at = alert_at + timedelta(days=10)
    await apply(
        db,
        [activity(tenant=tenant, customer="x", type="customer.churned", at=churned_at,
                  reason="price"),
         activity(tenant=tenant, customer="y", type="customer.renewed", at=churned_at,
                  reason="value")],
        now=churned_at,
    )  # fmt: skip
    async with db.session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT customer_id, outcome, reason, lead_time_s FROM alerts.churn_outcome "
                    "WHERE tenant_id = :t ORDER BY customer_id"
                ),
                {"t": tenant},
            )
        ).all()
    assert [(r.customer_id, r.outcome, r.reason) for r in rows] == [
        ("x", "churned", "price"),
        ("y", "renewed", "value"),
    ]
    assert rows[0].lead_time_s == timedelta(days=10).total_seconds()
    assert rows[1].lead_time_s is None
    [alert] = await _alerts(db, tenant, "x")
    assert alert.resolution == "churned"


async def test_the_scheduler_process_rescores_on_its_interval_and_stops_cleanly(
    alerts_settings, db: Database, make_tenant: TenantFactory
):
    from services.alerts import scheduler
    from tests.alerts.conftest import Clock, running
    from tests.support import eventually

    tenant = (await make_tenant()).id
    await apply(db, [activity(tenant=tenant, customer="q", type="product.used", at=T0)
                     for _ in range(10)], now=T0)  # fmt: skip
    settings = alerts_settings.model_copy(
        update={"rescore_interval_seconds": 0.2, "rescore_after_seconds": 3600}
    )
    clock = Clock(T0 + timedelta(days=90))
    async with running(scheduler.run, settings, clock=clock):
        [alert] = await eventually(lambda: _alerts(db, tenant, "q"))
    assert alert.explanation["cause"] == "decay"
