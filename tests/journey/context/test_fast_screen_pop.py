"""GET /v1/context's fast path (services/journey/context/fast.py) answers exactly as FastAPI's
handler, and hands every unusual request to it."""

from __future__ import annotations

import uuid

import pytest

from services.journey.context.service import normalized_lookup
from shared.errors import BadRequest
from shared.events import IdentifierType
from tests.journey.conftest import cloud_event, context_when, send


async def test_the_fast_path_answers_as_fastapi_and_hands_back_the_rest(
    journey, journey_worker, producer, journey_settings, make_tenant
):
    from prometheus_client import REGISTRY

    tenant = await make_tenant(scopes=["context:read"])
    other = await make_tenant(scopes=["context:read"])
    writer = await make_tenant(scopes=["events:write"])
    email = f"fast-{uuid.uuid4().hex[:6]}@shop.test"
    ident = [{"type": "email", "value": email, "verified_by": "login"}]
    await send(producer, journey_settings, cloud_event(tenant=tenant.id, identifiers=ident))
    params = {"identifier_type": "email", "value": email.upper()}  # normalized like ingest
    await context_when(journey, tenant.headers, lambda c: True, **params)

    def served() -> float:
        return (
            REGISTRY.get_sample_value(
                "waypoint_http_requests_total",
                {"service": "journey", "route": "/v1/context", "method": "GET", "status": "200"},
            )
            or 0
        )

    before = served()
    fast = await journey.get("/v1/context", params=params, headers=tenant.headers)
    # reveal_sensitive=false is not an ordinary request: FastAPI's handler serves it
    slow = await journey.get(
        "/v1/context", params={**params, "reveal_sensitive": "false"}, headers=tenant.headers
    )
    assert fast.status_code == slow.status_code == 200
    assert fast.headers["content-type"] == slow.headers["content-type"]
    assert fast.json() == slow.json()
    assert served() == before + 2  # both counted under the route's template

    # the same refusals, in the same shape, as FastAPI gives them
    cases = [
        ({**params}, {}),  # no key
        ({**params}, writer.headers),  # wrong scope
        ({**params}, other.headers),  # another tenant: not found
        ({"identifier_type": "email", "value": "nobody@shop.test"}, tenant.headers),
        ({"identifier_type": "fax", "value": "1"}, tenant.headers),  # unknown type
        ({"identifier_type": "email", "value": ""}, tenant.headers),  # too short
        ({"identifier_type": "email", "value": "x" * 321}, tenant.headers),  # too long
        ({"identifier_type": "email"}, tenant.headers),  # missing
        ({"identifier_type": "crm_id", "value": "a\x00b"}, tenant.headers),  # NUL: cannot be stored
    ]
    for query, headers in cases:
        r = await journey.get("/v1/context", params=query, headers=headers)
        assert r.status_code in {400, 401, 403, 404, 422}, (query, r.status_code)
        assert set(r.json()) == {"error", "detail"}, r.json()
    repeated = await journey.get(
        f"/v1/context?identifier_type=email&value={email}&value={email}", headers=tenant.headers
    )
    assert repeated.status_code == 200  # FastAPI's handler: the last value counts
    assert repeated.json() == fast.json()
    assert (
        await journey.post("/v1/context", params=params, headers=tenant.headers)
    ).status_code == 405


def test_the_fast_path_decodes_a_query_exactly_as_starlette():
    import random
    from urllib.parse import parse_qsl

    from services.journey.context.fast import _ordinary, _pairs

    alphabet = ["a", "=", "&", "+", "%", "%2B", "%3D", "%26", "%C3%A9", "%zz", "%E2", " ", "é"]
    rng = random.Random(14)
    queries = ["", "&", "a", "a=", "=a", "a==b", "&&a=1&&", "value=%2B1555&identifier_type=phone"]
    queries += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)
    ]
    for query in queries:
        assert _pairs(query) == parse_qsl(query, keep_blank_values=True), query
    assert _ordinary(b"identifier_type=phone&value=%2B15550100") == ("phone", "+15550100")
    assert _ordinary(b"value=a%40b.io&identifier_type=email") == ("email", "a@b.io")
    for refused in (
        b"identifier_type=phone",
        b"identifier_type=phone&value=",
        b"identifier_type=phone&identifier_type=email",
        b"value=1&value=2",
        b"identifier_type=phone&value=1&reveal_sensitive=false",
        b"identifier_type=phone&value=" + b"1" * 321,
    ):
        assert _ordinary(refused) is None, refused


@pytest.mark.parametrize("id_type", [t.value for t in IdentifierType])
def test_a_look_up_with_a_nul_character_is_refused_with_its_reason(id_type):
    # no stored identifier holds one (ingest refuses it): a 400 that says why, never a statement
    with pytest.raises(BadRequest, match="NUL"):
        normalized_lookup(id_type, "a@b.io\x00", phone_region="US")
