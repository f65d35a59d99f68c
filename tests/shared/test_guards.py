"""Input PostgreSQL cannot store (NUL) or Python cannot convert (a time outside the calendar once
in UTC) is a 422 naming the parameter on every route of every service, never a 500.

The routes come from each app's own route table (its OpenAPI document, checked against
``app.routes``), so a route added later is covered without editing this test; a new write route
fails ``test_json_strings_with_nul_are_refused_on_every_write_route`` until it has an example.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from services.alerts.app import create_app as alerts_app
from services.alerts.config import AlertsSettings
from services.ingest.app import create_app as ingest_app
from services.ingest.config import IngestSettings
from services.journey.app import create_app as journey_app
from services.journey.config import JourneySettings
from shared.db import Database
from tests.support import TenantFactory, served

NUL_VALUE = "a\x00b"
EXTREME_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
WRITE_METHODS = {"post", "put", "patch", "delete"}


def _b64(raw: bytes, *, pad: bool = True) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


# Each service's cursor format, holding a given time and id (what a crafted cursor would hold).
CURSORS: dict[str, Callable[[str, str], str]] = {
    "ingest": lambda at, key: _b64(orjson.dumps([at, key]), pad=False),
    "journey": lambda at, key: _b64(orjson.dumps([at, key])),
    "alerts": lambda at, key: _b64(f"{at}|{key}".encode()),
}


def _apps(overrides: dict[str, Any]) -> dict[str, FastAPI]:
    return {
        "ingest": ingest_app(IngestSettings(**overrides)),
        "journey": journey_app(JourneySettings(**overrides)),
        "alerts": alerts_app(AlertsSettings(**overrides)),
    }


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _resolve(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    for key in ("anyOf", "oneOf", "allOf"):
        options = [s for s in schema.get(key, []) if s.get("type") != "null"]
        if options:
            return _resolve(options[0], components)
    return schema


# Valid values the schema does not tell (so a NUL elsewhere reaches the database on old code).
SAMPLES = {"identifier_type": "crm_id"}


def _sample(schema: dict[str, Any], name: str = "") -> Any:
    """A valid value of a parameter, so that only the parameter under test is wrong."""
    if name in SAMPLES:
        return SAMPLES[name]
    if "enum" in schema:
        return schema["enum"][0]
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "array":
        return [_sample(schema.get("items", {}))]
    if kind == "boolean":
        return "false"
    if kind in {"integer", "number"}:
        return str(schema.get("minimum", 1))
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "date-time":
        return datetime.now(UTC).isoformat()
    return "x"


def operations(app: FastAPI) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(method, path template, parameters with a resolved schema) of every API route."""
    spec = app.openapi()
    components = spec.get("components", {}).get("schemas", {})
    routes = {
        (method.lower(), context.path_format)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and context.original_route.include_in_schema  # the HTML pages (/app) are not the API
        for method in context.methods or ()
    }
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert len(routes) > 5
    assert routes <= documented, f"routes missing from the OpenAPI table: {routes - documented}"
    found = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = [
                {**p, "schema": _resolve(p.get("schema", {}), components)}
                for p in op.get("parameters", [])
                if p["in"] in {"path", "query"}
            ]
            found.append((method, path, params))
    return found


def bodiless_deletes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of the DELETE routes without a request body: such a route
    (DELETE /v1/designed-journeys/{name}) never reads what a client sends it, so it has no JSON
    string to refuse nor to bound; its path is the other tests' case. Every POST, PUT and PATCH
    is probed, documented body or not (ingest's routes read their own bodies)."""
    return {
        (method, path)
        for path, ops in app.openapi()["paths"].items()
        for method, op in ops.items()
        if method == "delete" and "requestBody" not in op
    }


def _request(
    params: list[dict[str, Any]], path: str, bad: str, value: str
) -> tuple[str, dict[str, Any]]:
    """The URL and query of a request whose parameter ``bad`` is ``value``, others valid."""
    url, query = path, {}
    for p in params:
        given = value if p["name"] == bad else _sample(p["schema"], p["name"])
        if p["in"] == "path":
            url = url.replace("{" + p["name"] + "}", given.replace("\x00", "%00"))
        elif p["name"] == bad or p.get("required"):
            query[p["name"]] = given
    return url, query


def _names_the_parameter(response: httpx.Response, loc: str) -> str | None:
    """None when the response is the standard 422 naming ``loc``, else what is wrong."""
    if response.status_code != 422:
        return f"{response.status_code} {response.text[:200]}"
    body = response.json()
    if body.get("error") != "validation_error":
        return f"error {body.get('error')!r}"
    if not any(d.get("loc") == loc and d.get("message") for d in body.get("detail", [])):
        return f"detail does not name {loc}: {body.get('detail')}"
    return None


async def _send(client: httpx.AsyncClient, method: str, url: str, query: dict, headers: dict):
    body = {} if method in WRITE_METHODS else None
    return await client.request(method, url, params=query, json=body, headers=headers)


@pytest.mark.parametrize("service", ["ingest", "journey", "alerts"])
async def test_nul_and_out_of_range_times_in_paths_and_queries_are_422_on_every_route(
    settings_overrides, db: Database, make_tenant: TenantFactory, service: str
):
    tenant = await make_tenant(scopes=["admin"])
    app = _apps(settings_overrides)[service]
    problems: list[str] = []
    cases = 0
    async with served(app) as client:
        for method, path, params in operations(app):
            for param in params:
                where, name = param["in"], param["name"]
                bad_values = [NUL_VALUE]
                if param["schema"].get("format") == "date-time":
                    bad_values += EXTREME_TIMES
                if name == "cursor":
                    bad_values += [CURSORS[service](t, str(uuid.uuid4())) for t in EXTREME_TIMES]
                    if service != "alerts":  # the alerts cursor's id is a UUID, parsed as one
                        bad_values.append(CURSORS[service](EXTREME_TIMES[0][:10], NUL_VALUE))
                for value in bad_values:
                    cases += 1
                    url, query = _request(params, path, name, value)
                    r = await _send(client, method, url, query, tenant.headers)
                    wrong = _names_the_parameter(r, f"{where}.{name}")
                    if wrong:
                        problems.append(f"{method.upper()} {path} {name}={value!r}: {wrong}")
    assert cases > 0
    assert not problems, "\n".join(problems)


# One body per write route holding a NUL in a JSON string, and the field the 422 must name
# (None: the route reads its own body and refuses the event inside it, with the reason).
_EVENT = {
    "specversion": "1.0",
    "id": "nul-1",
    "source": "tests",
    "type": "message.received",
    "time": "2026-01-01T00:00:00Z",
    "data": {"identifiers": [{"type": "email", "value": "n@x.test"}], "text": NUL_VALUE},
}
_SEGMENT = {"userId": NUL_VALUE, "previousId": "p1", "groupId": "g1", "event": "Viewed"}
NUL_BODIES: dict[tuple[str, str], tuple[Any, str | None]] = {
    ("post", "/v1/events"): (_EVENT, None),
    **{
        ("post", f"/v1/{kind}"): (_SEGMENT, None)
        for kind in ("identify", "track", "alias", "page", "screen", "group")
    },  # fmt: skip
    ("post", "/v1/batch"): ({"batch": [{**_SEGMENT, "type": "identify"}]}, None),
    ("post", "/v1/customers/{customer_id}/facts"): (
        {"name": "language", "value": NUL_VALUE},
        "body.value",
    ),
    ("post", "/v1/customers/merge"): (
        {"survivor_id": str(uuid.uuid4()), "merged_id": str(uuid.uuid4()), "reason": NUL_VALUE},
        "body.reason",
    ),
    ("post", "/v1/customers/{customer_id}/split"): ({"reason": NUL_VALUE}, "body.reason"),
    ("post", "/v1/customers/{customer_id}/erase"): ({"reference": NUL_VALUE}, "body.reference"),
    ("put", "/v1/designed-journeys/{name}"): (
        {"description": "d", "steps": [{"activity": f"phone:{NUL_VALUE}"}]},
        "body.steps.0.activity",
    ),
    ("put", "/v1/fcr-policy"): (
        {"default_window": "7d", "overrides": [{"reason": NUL_VALUE, "window": "1d"}]},
        "body.overrides.0.reason",
    ),
    ("post", "/v1/alerts/{alert_id}/ack"): ({"note": NUL_VALUE}, "body.note"),
    ("post", "/v1/alerts/{alert_id}/resolve"): ({"note": NUL_VALUE}, "body.note"),
    ("put", "/v1/engagement-model"): (
        {"segments": {f"tier:{NUL_VALUE}": {}}},
        "body.segments.tier:a?b",
    ),
    ("put", "/v1/journey-map/config"): (
        {"stages": {f"ivr:{NUL_VALUE}": "support"}},
        "body.stages.ivr:a?b",
    ),
    ("put", "/v1/notification-channels"): (
        {"channels": [{"name": NUL_VALUE, "type": "webhook", "url": "http://127.0.0.1:9/h"}]},
        "body.channels.0.name",
    ),
}


@pytest.mark.parametrize("service", ["ingest", "journey", "alerts"])
async def test_json_strings_with_nul_are_refused_on_every_write_route(
    settings_overrides, db: Database, make_tenant: TenantFactory, service: str
):
    tenant = await make_tenant(scopes=["admin"])
    app = _apps(settings_overrides)[service]
    problems: list[str] = []
    bodiless = bodiless_deletes(app)
    async with served(app) as client:
        for method, path, params in operations(app):
            if method not in WRITE_METHODS or (method, path) in bodiless:
                continue
            assert (method, path) in NUL_BODIES, f"add a NUL body example for {method} {path}"
            body, loc = NUL_BODIES[(method, path)]
            url, _ = _request(params, path, "", "")
            r = await client.request(method, url, json=body, headers=tenant.headers)
            if loc is not None:
                wrong = _names_the_parameter(r, loc)
            else:
                wrong = None if r.status_code == 422 and "NUL" in r.text else r.text[:300]
            if wrong:
                problems.append(f"{method.upper()} {path}: {r.status_code} {wrong}")
    assert not problems, "\n".join(problems)


async def test_a_nul_escaped_by_a_backslash_is_not_a_nul(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    """The text ``\\u0000`` (a backslash, then ``u0000``) is fine: only U+0000 is refused."""
    tenant = await make_tenant(scopes=["admin"])
    app = _apps(settings_overrides)["alerts"]
    async with served(app) as client:
        r = await client.post(
            f"/v1/alerts/{uuid.uuid4()}/ack", json={"note": "C:\\u0000dir"}, headers=tenant.headers
        )
        assert r.status_code == 404, r.text  # got past the guard: no such alert


async def test_event_times_out_of_range_are_refused_with_the_reason(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    """An event whose time leaves the calendar in UTC is refused like any invalid event."""
    tenant = await make_tenant(scopes=["admin"])
    async with served(_apps(settings_overrides)["ingest"]) as client:
        for at in EXTREME_TIMES:
            event = {**_EVENT, "time": at, "data": {**_EVENT["data"], "text": "hi"}}
            r = await client.post("/v1/events", json=event, headers=tenant.headers)
            assert r.status_code == 422, r.text
            assert "out of range" in r.json()["detail"][0]["message"]
            track = {"userId": "u1", "event": "Viewed", "timestamp": at}
            r = await client.post("/v1/track", json=track, headers=tenant.headers)
            assert r.status_code == 422, r.text
            assert "out of range" in r.json()["detail"][0]["message"]


async def test_bodies_over_the_limit_are_413_declared_or_streamed(
    settings_overrides, db: Database, make_tenant: TenantFactory
):
    tenant = await make_tenant(scopes=["admin"])
    too_big = b'{"note": "' + b"x" * (1024 * 1024) + b'"}'

    async def streamed():  # no Content-Length: counted as it arrives
        for start in range(0, len(too_big), 64 * 1024):
            yield too_big[start : start + 64 * 1024]

    async with served(_apps(settings_overrides)["alerts"]) as client:
        url = f"/v1/alerts/{uuid.uuid4()}/ack"
        headers = {**tenant.headers, "content-type": "application/json"}
        for content in (too_big, streamed()):
            r = await client.post(url, content=content, headers=headers)
            assert r.status_code == 413, r.text
            assert r.json() == {
                "error": "payload_too_large",
                "detail": "request body exceeds the limit of 1048576 bytes",
            }
