"""An account's engagement covers all its customers, however many it has."""

from __future__ import annotations

from sqlalchemy import text

from services.alerts.app import create_app
from services.alerts.config import AlertsSettings
from shared.db import Database
from tests.support import TenantFactory, app_client


async def test_account_engagement_is_computed_over_all_of_its_customers(
    alerts_settings: AlertsSettings, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["alerts:read"])
    # 1,200 customers at 20 and 600 at 80: the mean is 40. The 1,000 lowest alone say 20.
    scores = [20.0] * 1200 + [80.0] * 600 + [None] * 5
    async with db.session() as session:
        await session.execute(
            text(
                "INSERT INTO alerts.customer_state (tenant_id, customer_id, account_id, score) "
                "SELECT :t, 'c' || n, 'big-account', score "
                "FROM unnest(CAST(:scores AS double precision[])) WITH ORDINALITY AS s(score, n)"
            ),
            {"t": tenant.id, "scores": scores},
        )
        # Merged into another customer: counted there, not twice.
        await session.execute(
            text(
                "INSERT INTO alerts.customer_state "
                "(tenant_id, customer_id, account_id, score, merged_into) "
                "VALUES (:t, 'gone', 'big-account', 0, 'c1')"
            ),
            {"t": tenant.id},
        )
    async with app_client(create_app(alerts_settings)) as api:
        response = await api.get("/v1/accounts/big-account/engagement", headers=tenant.headers)
    assert response.status_code == 200, response.text
    account = response.json()
    assert account["score"] == 40.0
    assert account["min_score"] == 20.0
    assert (account["customer_count"], account["scored_customers"]) == (1805, 1800)
    listed = account["customers"]
    assert len(listed) == 1000  # the lowest first, capped; the figures above are not
    assert {c["score"] for c in listed} == {20.0}
    assert "gone" not in {c["customer_id"] for c in listed}
