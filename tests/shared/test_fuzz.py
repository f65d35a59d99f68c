"""Schemathesis against all three apps in-process (their lifespans run: real PostgreSQL, real
broker), with a fixed seed and a bounded number of examples per operation: no 5xx, and every
response conforms to the document (status code, content type, headers, body schema).

Schemathesis generates valid data (positive mode) and invalid data (negative mode). A valid
request that is still refused is a failure, unless the rule that refuses it cannot be said in
OpenAPI: those are listed in ``RULES_BEYOND_SCHEMA``, each with its reason.

Runtime: about a minute on an idle machine (``EXAMPLES`` per operation and mode).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, seed, settings

from services.alerts.app import create_app as alerts_app
from services.alerts.config import AlertsSettings
from services.ingest.app import create_app as ingest_app
from services.ingest.config import IngestSettings
from services.journey.app import create_app as journey_app
from services.journey.config import JourneySettings
from shared.db import Database
from tests.support import TenantFactory

EXAMPLES = 5
SEED = 20261130

# 4xx answers to schema-valid requests that are right, because the rule is not expressible in
# OpenAPI 3.1 parameters. (operation, status) → why.
RULES_BEYOND_SCHEMA: dict[tuple[str, int], str] = {
    # journey map: `from` must be before `to`, and the window at most the granularity's limit
    ("GET /v1/journey-map", 422): "from < to and a bounded window: a cross-parameter rule",
    ("GET /v1/journey-map/variants", 422): "the same window rule, and cursors of this API",
    ("GET /v1/journey-map/channel-switches", 422): "the same window rule",
    ("GET /v1/segments/channel-mix", 422): "the same window rule",
    ("GET /v1/journey-map/journeys", 422): "the window rule; edge / node / variant in the map",
    ("GET /v1/journey-map/export", 422): "the same window rule",
    # context by identifier: the value must be a valid identifier of identifier_type
    ("GET /v1/context", 422): "value must be a valid identifier of identifier_type",
    ("GET /v1/route-hint", 422): "value must be a valid identifier of identifier_type",
    ("GET /v1/context", 400): "value must be a valid identifier of identifier_type",
    ("GET /v1/route-hint", 400): "value must be a valid identifier of identifier_type",
    # ingest: an identifier that is valid as no identifier type; events that fail validation
    ("GET /v1/events", 400): "identifier: 'type:value' whose value does not normalize",
    ("GET /v1/events", 422): "cursor not issued by this API; identifier and customer together",
    ("GET /v1/alerts", 422): "cursor not issued by this API",
    ("GET /v1/customers/{customer_id}/timeline", 422): "cursor not issued by this API",
    ("POST /v1/events", 422): "CloudEvents validation (types, identifiers) beyond the envelope",
    ("POST /v1/events", 403): "events naming another tenant",
    ("POST /v1/events", 415): "content types other than the declared ones",
    ("POST /v1/events", 400): "an empty batch",
    ("PUT /v1/journey-map/config", 422): "rules between the config's fields",
    # journey quality, experience, conformance, feedback: the map's window rule (from < to,
    # bounded), as_of within range, cursors of this API, and names of rows that exist
    ("GET /v1/pain-points", 422): "the map's window rule, as_of in range",
    ("GET /v1/pain-points/journeys", 422): "the window rule; kind and key of a pain point",
    ("GET /v1/fcr", 422): "the window rule; windows a comma-separated list of durations",
    ("GET /v1/journey-health", 422): "the window rule, as_of in range",
    ("GET /v1/experience", 422): "the window rule",
    ("GET /v1/feedback", 422): "the window rule; node in the map; cursors of this API",
    ("GET /v1/designed-journeys/{name}/conformance", 422): "the window rule",
    ("GET /v1/designed-journeys/{name}/conformance/journeys", 422): "the window rule; a "
    "deviation of this design; cursors of this API",
    ("PUT /v1/fcr-policy", 422): "windows of 1 hour to 400 days; distinct overrides",
    ("PUT /v1/designed-journeys/{name}", 422): "rules between steps (no wait before the first, "
    "distinct activities at the design's granularity)",
    ("PUT /v1/engagement-model", 422): "weights and thresholds that must agree",
    ("PUT /v1/notification-channels", 422): "destinations refused by the egress guard",
    ("GET /v1/churn/backtest", 422): "thresholds must be numbers in range, comma-separated",
    ("POST /v1/customers/merge", 422): "customers that must exist and differ",
    ("POST /v1/customers/{customer_id}/split", 422): "identifiers that must belong to it",
    ("POST /v1/customers/{customer_id}/facts", 422): "fact values checked against their kind",
}
for kind in ("identify", "track", "alias", "page", "screen", "group", "batch"):
    RULES_BEYOND_SCHEMA[(f"POST /v1/{kind}", 422)] = "a message must map to a valid event"
    RULES_BEYOND_SCHEMA[(f"POST /v1/{kind}", 400)] = "a batch body without a batch array"

APPS = {
    "ingest": (ingest_app, IngestSettings),
    "journey": (journey_app, JourneySettings),
    "alerts": (alerts_app, AlertsSettings),
}


@pytest.fixture(scope="module")
async def fuzz_key(db: Database) -> str:
    tenant = await TenantFactory(db)(scopes=["admin"])
    return tenant.key


def _document(service: str) -> Any:
    """The schema, from an app that is never started (building one connects to nothing)."""
    factory, settings_class = APPS[service]
    return schemathesis.openapi.from_dict(factory(settings_class()).openapi())


@pytest.fixture(scope="module")
def fuzz_apps(settings_overrides: dict[str, Any], db: Database) -> dict[str, Any]:
    """The apps under test; schemathesis runs each one's lifespan on its own event loop."""
    # rate limits off: thousands of requests from one key in a minute are the point here
    overrides = {**settings_overrides, "rate_limit_enabled": False}
    return {name: factory(settings(**overrides)) for name, (factory, settings) in APPS.items()}


def _check(case: Any, app: Any, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    # the document came from an app that is never started; requests (and the checks' own
    # probes) go to this one
    case.operation.app = case.operation.schema.app = app
    response = case.call(headers=auth)
    try:
        case.validate_response(response, headers=auth)
    except BaseException as error:  # schemathesis raises a group of the failed checks
        failures = list(getattr(error, "exceptions", [error]))
        label = (f"{case.method.upper()} {case.path}", response.status_code)
        justified = label in RULES_BEYOND_SCHEMA and all(
            type(f).__name__ == "RejectedPositiveData" for f in failures
        )
        if not justified:
            raise


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

ingest = _document("ingest")
journey = _document("journey")
alerts = _document("alerts")


@ingest.parametrize()
@seed(SEED)
@FUZZ
def test_ingest_api_holds_under_fuzzing(
    case: Any, fuzz_apps: dict[str, Any], fuzz_key: str
) -> None:
    _check(case, fuzz_apps["ingest"], fuzz_key)


@journey.parametrize()
@seed(SEED)
@FUZZ
def test_journey_api_holds_under_fuzzing(
    case: Any, fuzz_apps: dict[str, Any], fuzz_key: str
) -> None:
    _check(case, fuzz_apps["journey"], fuzz_key)


@alerts.parametrize()
@seed(SEED)
@FUZZ
def test_alerts_api_holds_under_fuzzing(
    case: Any, fuzz_apps: dict[str, Any], fuzz_key: str
) -> None:
    _check(case, fuzz_apps["alerts"], fuzz_key)
