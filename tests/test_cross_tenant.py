"""Tenant isolation generated from the route tables (OWASP API1, broken object-level
authorization): for every route of every service whose path names a resource, tenant B's admin
key on tenant A's real resource gets 404 or 403, never A's data or a change to it.

A new route is covered without editing this file; a route with a path parameter this file has
no resource for fails ``test_every_path_parameter_has_a_resource`` until one is added.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.alerts.config import AlertsSettings
from services.journey.config import JourneySettings
from shared.db import Database
from tests.alerts.conftest import T0, apply, usage
from tests.journey.maps.reference import Ev
from tests.journey.maps.support import apply_chunk, envelope
from tests.shared.test_guards import NUL_BODIES, NUL_VALUE, _apps, operations
from tests.support import TenantFactory, served

# What each service's path parameters name, so A's real resource can be made for each.
RESOURCE_PARAMS = {
    "ingest": set(),
    "journey": {"customer_id", "name", "erasure_id"},
    "alerts": {"alert_id", "customer_id", "account_id"},
}


def _path_params(params: list[dict[str, Any]]) -> set[str]:
    return {p["name"] for p in params if p["in"] == "path"}


@pytest.mark.parametrize("service", ["ingest", "journey", "alerts"])
def test_every_path_parameter_has_a_resource(settings_overrides, service: str):
    app = _apps(settings_overrides)[service]
    named = set().union(*(_path_params(params) for _, _, params in operations(app)))
    assert named <= RESOURCE_PARAMS[service], f"make tenant A a resource for {named}"


async def _journey_customer(
    db: Database, overrides: dict[str, Any], tenant: str, who: str = "a"
) -> str:
    """A real journey customer of ``tenant``, made by the worker's own applier."""
    settings = JourneySettings(**overrides)
    ev = Ev(id=f"x-{uuid.uuid4().hex[:8]}", type="contact.started", t=0, data={"channel": "phone"})
    email = {"type": "email", "value": f"{who}-{tenant}@customer.test", "verified_by": "login"}
    await apply_chunk(db, settings, [envelope(tenant, ev, T0, [email])])
    from sqlalchemy import text

    async with db.session() as session:
        row = await session.execute(
            text(
                "SELECT c.id FROM journey.customer c JOIN journey.identifier i "
                "ON i.tenant_id = c.tenant_id AND i.customer_id = c.id "
                "WHERE c.tenant_id = :t AND i.value = :v"
            ),
            {"t": tenant, "v": email["value"]},
        )
        found = row.scalar()
    assert found is not None
    return str(found)


# A designed journey of tenant A (its name is the resource; names are per tenant).
DESIGN = {"steps": [{"activity": "phone:ivr"}, {"activity": "phone:agent"}]}
# Routes where a name is the caller's own namespace: B's PUT or DELETE of the same name makes or
# removes B's own design (2xx is right), as long as A's stays exactly as it was (checked below).
# Query parameters a route requires, with values valid for A's resources.
REQUIRED_QUERY = {"/v1/designed-journeys/{name}/conformance/journeys": "?deviation=deviating"}
PER_TENANT_NAMES = {
    ("put", "/v1/designed-journeys/{name}"),
    ("delete", "/v1/designed-journeys/{name}"),
}


async def _journey_resources(
    client: Any, db: Database, overrides: dict[str, Any], a: Any
) -> dict[str, str]:
    """Tenant A's customer, designed journey and erasure (of a second customer)."""
    values = {"customer_id": await _journey_customer(db, overrides, a.id)}
    erased = await _journey_customer(db, overrides, a.id, who="erased")
    r = await client.post(f"/v1/customers/{erased}/erase", headers=a.headers)
    assert r.status_code == 202, r.text
    values["erasure_id"] = r.json()["id"]
    values["name"] = f"care-{uuid.uuid4().hex[:6]}"
    r = await client.put(f"/v1/designed-journeys/{values['name']}", json=DESIGN, headers=a.headers)
    assert r.status_code in {200, 201}, r.text
    return values


async def _alerts_resources(db: Database, tenant: str) -> dict[str, str]:
    """An open churn alert of ``tenant``'s customer and account (its score collapsed)."""
    customer, account = f"cust-{uuid.uuid4().hex[:6]}", f"acct-{uuid.uuid4().hex[:6]}"
    await apply(db, [usage(tenant=tenant, customer=customer, account=account, at=T0, active=10)
                     for _ in range(12)], now=T0)  # fmt: skip
    later = T0 + timedelta(days=60)
    await apply(db, [usage(tenant=tenant, customer=customer, at=later, active=0)], now=later)
    from sqlalchemy import text

    async with db.session() as session:
        row = await session.execute(
            text("SELECT id FROM alerts.alert WHERE tenant_id = :t LIMIT 1"), {"t": tenant}
        )
        alert = row.scalar()
    assert alert is not None
    return {"alert_id": str(alert), "customer_id": customer, "account_id": account}


def _url(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.mark.parametrize("service", ["journey", "alerts"])
async def test_another_tenants_key_never_reaches_a_resource(
    settings_overrides, db: Database, make_tenant: TenantFactory, service: str
):
    a = await make_tenant(scopes=["admin"])
    b = await make_tenant(scopes=["admin"])
    app = _apps(settings_overrides)[service]
    problems: list[str] = []
    checked = 0
    async with served(app) as client:
        if service == "journey":
            values = await _journey_resources(client, db, settings_overrides, a)
            design_before = (
                await client.get(f"/v1/designed-journeys/{values['name']}", headers=a.headers)
            ).json()
        else:
            AlertsSettings(**settings_overrides)
            values = await _alerts_resources(db, a.id)
        # B's writes under a per-tenant name come last: they make B's own design of that name
        ordered = sorted(operations(app), key=lambda op: (op[0], op[1]) in PER_TENANT_NAMES)
        for method, path, params in ordered:
            if not _path_params(params):
                continue
            url = _url(path, values) + REQUIRED_QUERY.get(path, "")
            body = None
            if method != "get":
                example, _ = NUL_BODIES.get((method, path), (None, None))
                body = _clean(example)
            elif not path.endswith("/stream"):  # A's own key sees it: the resource is real
                mine = await client.get(url, headers=a.headers)
                if mine.status_code != 200:
                    problems.append(f"A's own GET {url}: {mine.status_code} {mine.text[:120]}")
            theirs = await client.request(method, url, json=body, headers=b.headers)
            checked += 1
            if (method, path) in PER_TENANT_NAMES and theirs.is_success:
                continue  # B's own design of that name; A's is compared below
            if theirs.status_code not in {403, 404}:
                problems.append(
                    f"B {method.upper()} {url}: {theirs.status_code} {theirs.text[:160]}"
                )
        if service == "journey":  # whatever B did under A's design's name, A's is untouched
            r = await client.get(f"/v1/designed-journeys/{values['name']}", headers=a.headers)
            assert r.json() == design_before
    assert checked >= 3
    assert not problems, "\n".join(problems)


def _clean(value: Any) -> Any:
    """The write examples of test_guards with their NUL replaced: valid bodies."""
    if isinstance(value, str):
        return value.replace(NUL_VALUE, "note")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
