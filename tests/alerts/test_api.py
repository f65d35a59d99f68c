"""The alerts API: model changes take effect, invalid models are refused with the reason, the
alert lifecycle, paging, scopes, and tenant isolation on every endpoint."""

from __future__ import annotations

from datetime import timedelta

import httpx

from services.alerts.app import create_app
from services.alerts.config import AlertsSettings
from services.alerts.scheduler import rescore_due
from shared.db import Database
from tests.alerts.conftest import T0, WEBHOOK_SECRET, activity, apply, usage
from tests.support import TenantFactory, app_client, refused_at_commit, served


async def _collapse(db: Database, tenant: str, customer: str, *, account: str = "acct") -> None:
    await apply(db, [usage(tenant=tenant, customer=customer, account=account, at=T0, active=10)
                     for _ in range(12)], now=T0)  # fmt: skip
    later = T0 + timedelta(days=60)
    await apply(db, [usage(tenant=tenant, customer=customer, at=later, active=0)], now=later)


async def test_model_changes_through_the_api_take_effect(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read", "alerts:write"])
    # a middling customer: 60-ish, no alert under the default threshold of 40
    await apply(db, [usage(tenant=tenant.id, customer="m", at=T0, active=4) for _ in range(6)],
                now=T0)  # fmt: skip
    async with app_client(create_app(alerts_settings)) as api:
        default = (await api.get("/v1/engagement-model", headers=tenant.headers)).json()
        assert default["version"] == 0
        assert default["model"]["thresholds"]["alert_below"] == 40
        engagement = (await api.get("/v1/customers/m/engagement", headers=tenant.headers)).json()
        assert 45 < engagement["score"] < 75
        assert (await api.get("/v1/alerts", headers=tenant.headers)).json()["items"] == []

        model = default["model"]
        model["thresholds"]["alert_below"] = 80
        model["segments"] = {"tier:gold": {"thresholds": {"alert_below": 20}}}
        r = await api.put("/v1/engagement-model", json=model, headers=tenant.headers)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 1

        # the scheduler's next pass rescores every customer of the tenant with the new model
        rescored = await rescore_due(
            db, now=T0 + timedelta(minutes=1), stale_after=timedelta(hours=1), tenant_id=tenant.id
        )
        assert rescored == 1
        [alert] = (await api.get("/v1/alerts", headers=tenant.headers)).json()["items"]
        assert alert["threshold"] == 80
        assert alert["customer_id"] == "m"

        # segments: a gold customer is judged by the gold threshold
        await apply(db, [usage(tenant=tenant.id, customer="g", at=T0, active=4,
                               traits={"tier": "gold"}) for _ in range(6)], now=T0)  # fmt: skip
        gold = (await api.get("/v1/customers/g/engagement", headers=tenant.headers)).json()
        assert gold["segment"] == "tier:gold"
        assert gold["open_alert_id"] is None


async def test_an_invalid_model_gets_a_422_saying_what_is_wrong(
    alerts_settings: AlertsSettings, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:write", "alerts:read"])
    async with app_client(create_app(alerts_settings)) as api:
        cases = [
            ({"weights": {"activity": -5}}, "weights must be >= 0"),
            ({"weights": {"loyalty": 5}}, "weights.loyalty"),
            ({"thresholds": {"alert_below": 150}}, "thresholds.alert_below"),
            ({"segments": {"region:eu": {}}}, "segment keys"),
            ({"thresholds": {"rules": ["gut_feeling"]}}, "thresholds.rules.0"),
        ]
        for body, expected in cases:
            r = await api.put("/v1/engagement-model", json=body, headers=tenant.headers)
            assert r.status_code == 422, body
            assert expected in str(r.json()["detail"]), r.json()
        assert (await api.get("/v1/engagement-model", headers=tenant.headers)).json()[
            "version"
        ] == 0


async def test_alert_lifecycle_filters_paging_and_accounts(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["admin"])
    for i in range(3):
        await _collapse(db, tenant.id, f"c{i}", account="acct-9")
    async with app_client(create_app(alerts_settings)) as api:
        h = tenant.headers
        page = (await api.get("/v1/alerts", params={"limit": 2}, headers=h)).json()
        assert len(page["items"]) == 2
        assert page["next_cursor"]
        rest = (await api.get("/v1/alerts", params={"limit": 2, "cursor": page["next_cursor"]},
                              headers=h)).json()  # fmt: skip
        assert len(rest["items"]) == 1
        assert rest["next_cursor"] is None
        ids = [a["id"] for a in page["items"] + rest["items"]]
        assert len(set(ids)) == 3

        ack = await api.post(f"/v1/alerts/{ids[0]}/ack", json={"note": "calling them"}, headers=h)
        assert ack.status_code == 200
        assert ack.json()["status"] == "acknowledged"
        assert ack.json()["notes"][0]["text"] == "calling them"
        done = await api.post(f"/v1/alerts/{ids[0]}/resolve", json={"note": "renewed"}, headers=h)
        assert done.json()["status"] == "resolved"
        assert done.json()["resolution"] == "manual"
        assert [n["text"] for n in done.json()["notes"]] == ["calling them", "renewed"]
        again = await api.post(f"/v1/alerts/{ids[0]}/ack", headers=h)
        assert again.status_code == 409
        await api.post(f"/v1/alerts/{ids[1]}/resolve", headers=h)  # no body at all

        by = {}
        for status in ("open", "acknowledged", "resolved"):
            items = (await api.get("/v1/alerts", params={"status": status}, headers=h)).json()
            by[status] = len(items["items"])
        assert by == {"open": 1, "acknowledged": 0, "resolved": 2}
        owner = (await api.get("/v1/alerts", params={"owner": "cs-team"}, headers=h)).json()
        assert len(owner["items"]) == 3
        acct = (await api.get("/v1/alerts", params={"account_id": "acct-9"}, headers=h)).json()
        assert len(acct["items"]) == 3
        none = (await api.get("/v1/alerts", params={"account_id": "other"}, headers=h)).json()
        assert none["items"] == []
        rule = (await api.get("/v1/alerts", params={"rule": "score_drop"}, headers=h)).json()
        assert rule["items"] == []
        bad = await api.get("/v1/alerts", params={"rule": "nope"}, headers=h)
        assert bad.status_code == 422
        assert (await api.get("/v1/alerts", params={"cursor": "!!"}, headers=h)).status_code == 422

        account = (await api.get("/v1/accounts/acct-9/engagement", headers=h)).json()
        assert len(account["customers"]) == 3
        assert account["open_alerts"] == 1  # manual resolution releases the customer
        assert account["score"] < 40

        history = (await api.get("/v1/customers/c0/engagement", headers=h)).json()["history"]
        assert [p["cause"] for p in history] == ["event", "event"]
        assert history[0]["delta"] < -30
        assert len(history[0]["event_ids"]) == 1


async def test_churn_reasons_report(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read"])
    await _collapse(db, tenant.id, "gone")
    at = T0 + timedelta(days=75)
    await apply(db, [activity(tenant=tenant.id, customer="gone", type="customer.churned", at=at,
                              reason="price"),
                     activity(tenant=tenant.id, customer="stay", type="customer.renewed", at=at,
                              reason="support")], now=at)  # fmt: skip
    async with app_client(create_app(alerts_settings)) as api:
        report = (await api.get("/v1/churn/reasons", headers=tenant.headers)).json()
    rows = {(r["outcome"], r["reason"]): r for r in report["rows"]}
    assert rows[("churned", "price")]["alerted"] == 1
    assert rows[("churned", "price")]["median_lead_time_days"] == 15.0
    assert rows[("renewed", "support")]["alerted"] == 0


async def test_tenant_isolation_and_scopes_on_every_endpoint(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    owner = await make_tenant(scopes=["alerts:read", "alerts:write"])
    other = await make_tenant(scopes=["alerts:read", "alerts:write"])
    await _collapse(db, owner.id, "secret-customer", account="secret-account")
    async with app_client(create_app(alerts_settings)) as api:
        alert_id = (await api.get("/v1/alerts", headers=owner.headers)).json()["items"][0]["id"]
        hook = {"name": "h", "type": "webhook", "url": "https://example.test/h",
                "secret": WEBHOOK_SECRET}  # fmt: skip
        r = await api.put("/v1/notification-channels", json={"channels": [hook]},
                          headers=owner.headers)  # fmt: skip
        assert r.status_code == 200
        r = await api.put("/v1/engagement-model", json={"thresholds": {"alert_below": 55}},
                          headers=owner.headers)  # fmt: skip
        assert r.status_code == 200

        o = other.headers
        assert (await api.get("/v1/alerts", headers=o)).json()["items"] == []
        for method, path in [
            ("GET", f"/v1/alerts/{alert_id}"),
            ("POST", f"/v1/alerts/{alert_id}/ack"),
            ("POST", f"/v1/alerts/{alert_id}/resolve"),
            ("GET", "/v1/customers/secret-customer/engagement"),
            ("GET", "/v1/accounts/secret-account/engagement"),
        ]:
            r = await api.request(method, path, headers=o)
            assert r.status_code == 404, (method, path, r.text)
        assert (await api.get("/v1/engagement-model", headers=o)).json()["version"] == 0
        assert (await api.get("/v1/notification-channels", headers=o)).json()["channels"] == []
        assert (await api.get("/v1/churn/reasons", headers=o)).json()["rows"] == []
        backtest = await api.get("/v1/churn/backtest?thresholds=40", headers=o)
        assert backtest.json()["rows"][0]["flagged"] == 0
        mine = await api.get("/v1/churn/backtest?thresholds=40", headers=owner.headers)
        assert mine.json()["rows"][0]["flagged"] == 1
        # the other tenant's writes leave the owner's data alone
        await api.put("/v1/notification-channels", json={"channels": []}, headers=o)
        owned = (await api.get("/v1/notification-channels", headers=owner.headers)).json()
        assert [c["name"] for c in owned["channels"]] == ["h"]
        status = (await api.get(f"/v1/alerts/{alert_id}", headers=owner.headers)).json()["status"]
        assert status == "open"

        reader = await make_tenant(scopes=["alerts:read"])
        wrong = await make_tenant(scopes=["events:write"])
        await _expect_all(api, alert_id, reader.headers, read=200, write=403)
        await _expect_all(api, alert_id, wrong.headers, read=403, write=403)
        await _expect_all(api, alert_id, {}, read=401, write=401)


async def _expect_all(
    api: httpx.AsyncClient, alert_id: str, headers: dict, *, read: int, write: int
) -> None:
    reads = ["/v1/alerts", "/v1/engagement-model", "/v1/notification-channels",
             "/v1/churn/reasons", "/v1/churn/backtest?thresholds=40"]  # fmt: skip
    for path in reads:
        assert (await api.get(path, headers=headers)).status_code == read, path
    writes = [
        ("POST", f"/v1/alerts/{alert_id}/ack", None),
        ("POST", f"/v1/alerts/{alert_id}/resolve", None),
        ("PUT", "/v1/engagement-model", {}),
        ("PUT", "/v1/notification-channels", {"channels": []}),
    ]
    for method, path, body in writes:
        r = await api.request(method, path, json=body, headers=headers)
        assert r.status_code == write, (method, path, r.text)


async def test_threshold_backtest_against_recorded_churn(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read"])
    await _collapse(db, tenant.id, "a")  # below 40 at T0 + 60 d, churns 10 days later
    await _collapse(db, tenant.id, "c")  # below 40, stays
    await apply(db, [usage(tenant=tenant.id, customer="b", at=T0, active=10)
                     for _ in range(12)], now=T0)  # fmt: skip
    churn_at = T0 + timedelta(days=70)
    await apply(db, [activity(tenant=tenant.id, customer=c, type="customer.churned", at=churn_at)
                     for c in ("a", "b")], now=churn_at)  # fmt: skip
    params = {"thresholds": [40, 5], "since": (T0 - timedelta(days=1)).isoformat()}
    async with app_client(create_app(alerts_settings)) as api:
        report = await api.get("/v1/churn/backtest", params=params, headers=tenant.headers)
        assert report.status_code == 200, report.text
        bad = await api.get("/v1/churn/backtest", params={"thresholds": [140]},
                            headers=tenant.headers)  # fmt: skip
    assert bad.status_code == 422
    assert "between 0 and 100" in bad.text
    low, high = report.json()["rows"]
    assert (high["threshold"], high["churned"], high["churned_flagged_before"]) == (40, 2, 1)
    assert (high["recall"], high["flagged"], high["flagged_then_churned"]) == (0.5, 2, 1)
    assert high["precision"] == 0.5
    assert high["median_lead_time_days"] == 10.0
    assert (low["threshold"], low["churned_flagged_before"], low["flagged"]) == (5, 0, 0)
    assert low["precision"] is None


async def test_a_change_whose_commit_fails_is_not_reported_as_done(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    """Over a real server: the commit happens before the response, so its failure is the
    response (409 here), and the client never sees a 200 for a change that was not saved."""
    tenant = await make_tenant(scopes=["admin"])
    await _collapse(db, tenant.id, "c0")
    h = tenant.headers
    async with served(create_app(alerts_settings)) as api:
        model = (await api.get("/v1/engagement-model", headers=h)).json()["model"]
        model["thresholds"]["alert_below"] = 70
        [alert] = (await api.get("/v1/alerts", headers=h)).json()["items"]
        async with refused_at_commit(db, "alerts.engagement_model", tenant.id):
            put = await api.put("/v1/engagement-model", json=model, headers=h)
            assert put.status_code == 409, put.text
            assert "not saved" in put.json()["detail"]
        async with refused_at_commit(db, "alerts.alert", tenant.id):
            ack = await api.post(f"/v1/alerts/{alert['id']}/ack", json={"note": "x"}, headers=h)
            assert ack.status_code == 409, ack.text
        assert (await api.get("/v1/engagement-model", headers=h)).json()["version"] == 0
        after = (await api.get(f"/v1/alerts/{alert['id']}", headers=h)).json()
        assert (after["status"], after["notes"]) == ("open", [])
        # and once the database accepts it, the same request is saved before its 200 arrives
        assert (await api.put("/v1/engagement-model", json=model, headers=h)).status_code == 200
        assert (await api.get("/v1/engagement-model", headers=h)).json()["version"] == 1
