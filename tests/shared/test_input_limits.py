"""Size limits on every route, generated from the route tables: query values and paths over
2,048 characters are a 422 naming the parameter; JSON nested hundreds or 100,000 levels deep and
strings of 900 kB in a write body are refused with a 4xx (the body limit and each field's own
``max_length`` bound what is stored), never a 500."""

from __future__ import annotations

import orjson
import pytest

from shared.db import Database
from shared.guards import MAX_HEADER_BYTES, MAX_PARAMETER_CHARS
from tests.shared.test_guards import (
    NUL_BODIES,
    NUL_VALUE,
    WRITE_METHODS,
    _apps,
    _names_the_parameter,
    _request,
    _send,
    bodiless_deletes,
    operations,
)
from tests.support import TenantFactory, served

LONG = "x" * (MAX_PARAMETER_CHARS + 1)
# The one error shape; the Segment routes add the two keys Segment's SDKs read
# (shared.error_handlers).
ERROR_SHAPES = ({"error", "detail"}, {"error", "detail", "code", "message"})


@pytest.mark.parametrize("service", ["ingest", "journey", "alerts"])
async def test_query_values_and_paths_over_the_limit_are_422(
    settings_overrides, db: Database, make_tenant: TenantFactory, service: str
):
    tenant = await make_tenant(scopes=["admin"])
    app = _apps(settings_overrides)[service]
    problems: list[str] = []
    async with served(app) as client:
        for method, path, params in operations(app):
            for param in params:
                if param["in"] != "query":
                    continue
                url, query = _request(params, path, param["name"], LONG)
                r = await _send(client, method, url, query, tenant.headers)
                wrong = _names_the_parameter(r, f"query.{param['name']}")
                if wrong:
                    problems.append(f"{method.upper()} {path} {param['name']}: {wrong}")
        r = await client.get("/v1/" + LONG, headers=tenant.headers)
        if _names_the_parameter(r, "path"):
            problems.append(f"long path: {r.status_code} {r.text[:200]}")
    assert not problems, "\n".join(problems)


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("service", ["ingest", "journey", "alerts"])
async def test_deep_json_and_huge_strings_are_4xx_on_every_write_route(
    settings_overrides, db: Database, make_tenant: TenantFactory, service: str
):
    tenant = await make_tenant(scopes=["admin"])
    app = _apps(settings_overrides)[service]
    headers = {**tenant.headers, "Content-Type": "application/json"}
    problems: list[str] = []
    bodiless = bodiless_deletes(app)
    async with served(app) as client:
        for method, path, params in operations(app):
            if method not in WRITE_METHODS or (method, path) in bodiless:
                continue
            url, _ = _request(params, path, "", "")
            example, loc = NUL_BODIES[(method, path)]
            bodies = {
                "300 levels": _deep(300),
                "100,000 levels": _deep(100_000),
                "5,000 nested objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
                "a 900 kB string": orjson.dumps(example).replace(
                    orjson.dumps(NUL_VALUE)[1:-1], b"x" * 900_000
                ),
            }
            for case, body in bodies.items():
                r = await client.request(method, url, content=body, headers=headers)
                # ingest's Segment routes drop an over-long identifier and keep the event
                dropped = loc is None and case == "a 900 kB string" and r.status_code == 200
                if not (400 <= r.status_code < 500 or dropped):
                    problems.append(f"{method.upper()} {path} {case}: {r.status_code}")
                elif r.status_code >= 400 and set(r.json()) not in ERROR_SHAPES:
                    problems.append(f"{method.upper()} {path} {case}: shape {r.text[:200]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("service", ["ingest", "journey", "alerts"])
async def test_oversized_headers_are_431_before_auth(
    settings_overrides, db: Database, service: str
):
    """A 1 MB header (accepted before) and many medium ones are refused, with the error shape."""
    app = _apps(settings_overrides)[service]
    async with served(app) as client:
        for headers in (
            {"X-Padding": "x" * 1_000_000},
            {f"X-Pad-{n}": "y" * 1000 for n in range(40)},
        ):
            r = await client.get("/healthz", headers=headers)
            assert r.status_code == 431, r.text
            body = r.json()
            assert body["error"] == "headers_too_large"
            assert str(MAX_HEADER_BYTES) in body["detail"]
        assert (await client.get("/healthz", headers={"X-Small": "z" * 4000})).status_code == 200
