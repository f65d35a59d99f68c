"""The OpenAPI documents work for a person with Swagger UI: security schemes ("Authorize"), each
operation's scope and error responses in the one error shape, docs assets served by the app
itself (no CDN), and unknown query parameters refused instead of silently ignored. Generated
from each app's route table, so a new route is covered without editing this file."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.db import Database
from tests.shared.test_guards import _apps, _request, _send, operations
from tests.support import TenantFactory, served

SERVICES = ["ingest", "journey", "alerts"]
PUBLIC = {"/healthz", "/readyz", "/v1/schema"}
UNSAFE = {"post", "put", "patch", "delete"}


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_declares_its_scope_and_errors(settings_overrides, service: str):
    spec = _apps(settings_overrides)[service].openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"]["name"] == "X-API-Key"
    assert schemes["basic"]["scheme"] == "basic"
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == {"error", "detail"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's own 422 shape
    problems = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            name = f"{method.upper()} {path}"
            if path in PUBLIC:
                assert op["security"] == [], name
                continue
            scopes = op.get("x-required-scopes")
            if scopes is None:
                problems.append(f"{name}: no x-required-scopes")
                continue
            if method in UNSAFE and any(s.endswith(":read") for s in scopes):
                problems.append(f"{name}: an unsafe method needs only a read scope {scopes}")
            listed = [next(iter(entry.values())) for entry in op["security"]]
            if not listed or any(names != scopes for names in listed):
                problems.append(f"{name}: security {op['security']} vs {scopes}")
            if "**Scope:**" not in op.get("description", ""):
                problems.append(f"{name}: the description does not say the scope")
            expected = {"401", "403", "429"}
            if "{" in path:
                expected.add("404")
            if op.get("parameters") or "requestBody" in op:
                expected.add("422")
            for status in expected - set(op["responses"]):
                problems.append(f"{name}: {status} not declared")
            for status, response in op["responses"].items():
                if status.startswith("4"):
                    content = response.get("content", {}).get("application/json", {})
                    ref = content.get("schema", {}).get("$ref", "")
                    if not ref.endswith("ErrorBody") or "example" not in content:
                        problems.append(f"{name}: {status} is not the error body with an example")
    assert not problems, "\n".join(problems)


def test_segment_routes_take_basic_auth_and_declare_their_bodies(settings_overrides):
    spec = _apps(settings_overrides)["ingest"].openapi()
    for kind in ("identify", "track", "alias", "page", "screen", "group", "batch"):
        op = spec["paths"][f"/v1/{kind}"]["post"]
        assert {"basic": ["events:write"]} in op["security"]
        body = op["requestBody"]["content"]["application/json"]
        assert body["schema"]["type"] == "object"
        assert "example" in body
        error = op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
        assert error.endswith("/SegmentErrorBody")
    other = spec["paths"]["/v1/events"]["post"]
    assert all("basic" not in entry for entry in other["security"])


@pytest.mark.parametrize("service", SERVICES)
async def test_docs_pages_load_their_assets_from_the_app_itself(
    settings_overrides, db: Database, service: str
):
    app = _apps(settings_overrides)[service]
    async with served(app) as client:
        for page in ("/docs", "/redoc"):
            r = await client.get(page)
            assert r.status_code == 200, r.text
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
            scripts = [a for a in assets if a.endswith(".js")]
            assert scripts, r.text
            for asset in assets:
                assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
                got = await client.get(asset)
                assert got.status_code == 200, asset
            assert "cdn" not in r.text.lower()
            assert "/openapi.json" in r.text
        js = await client.get(scripts[0])
        assert len(js.content) > 100_000  # the bundle itself, not a stub


@pytest.mark.parametrize("service", SERVICES)
async def test_unknown_query_parameters_are_422_naming_them_on_every_route(
    settings_overrides, db: Database, make_tenant: TenantFactory, service: str
):
    tenant = await make_tenant(scopes=["admin"])
    app = _apps(settings_overrides)[service]
    problems: list[str] = []
    async with served(app) as client:
        for method, path, params in operations(app):
            url, query = _request(params, path, "", "")
            r = await _send(client, method, url, {**query, "customer_idd": "x"}, tenant.headers)
            body: Any = r.json() if r.headers.get("content-type", "").startswith("app") else {}
            named = [d.get("loc") for d in body.get("detail", []) if isinstance(d, dict)]
            if r.status_code != 422 or "query.customer_idd" not in named:
                problems.append(f"{method.upper()} {path}: {r.status_code} {r.text[:160]}")
    assert not problems, "\n".join(problems)


async def test_the_renamed_ingest_filter_and_its_old_name(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["events:read"])
    app = _apps(settings_overrides)["ingest"]
    async with served(app) as client:
        for params in ({"identifier": "phone:+14155550123"}, {"customer": "phone:+14155550123"}):
            r = await client.get("/v1/events", params=params, headers=tenant.headers)
            assert r.status_code == 200, r.text
        both = {"identifier": "x", "customer": "x"}
        r = await client.get("/v1/events", params=both, headers=tenant.headers)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == "query.customer"
