"""CloudEvents over HTTP, and read-back of stored events, dead letters and the schema."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from services.ingest import repository
from services.ingest.body import UnsupportedMediaType, media_type, parse_json, read_body
from services.ingest.config import IngestSettings
from services.ingest.schemas import (
    DeadLetterList,
    DeadLetterPublic,
    EventPage,
    EventPublic,
    IngestResult,
)
from services.ingest.service import Outcome, accept, identifier_keys
from shared.auth.dependencies import EventsReader, EventsWriter
from shared.deps import ProducerDep, SessionDep
from shared.errors import BadRequest, Forbidden, PayloadTooLarge, Unprocessable
from shared.events import EventType, RejectReason
from shared.events.schema import SCHEMA_PATH
from shared.guards import UtcDateTime
from shared.privacy import reveal
from shared.privacy.masking import mask_event, mask_payload


def get_settings(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
router = APIRouter(prefix="/v1", tags=["events"])

SINGLE_TYPES = {"application/cloudevents+json", "application/json"}
BATCH_TYPE = "application/cloudevents-batch+json"
_ONE = {"type": "object", "description": "A Waypoint CloudEvent (JSON Schema: GET /v1/schema)."}
_EVENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/cloudevents+json": {"schema": _ONE},
            BATCH_TYPE: {"schema": {"type": "array", "items": _ONE}},
        },
    }
}


def json_response(content: Any, status_code: int = 200) -> Response:
    """JSON rendered by orjson, skipping a second validation of data we built ourselves."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def refuse_unless_accepted(outcome: Outcome) -> Outcome:
    """Nothing accepted: 403 when every item named another tenant, else 422 saying why."""
    if outcome.accepted:
        return outcome
    results = outcome.results
    first = results[0]
    summary = f"event {first['index']} rejected ({first['reason']}): {first['message']}"
    if len(results) > 1:
        summary = f"all {len(results)} events rejected; first: {summary}"
    if all(r["reason"] == RejectReason.tenant_mismatch.value for r in results):
        raise Forbidden(summary, detail=results)
    raise Unprocessable(summary, detail=results)


def binary_attributes(request: Request) -> dict[str, str]:
    """The context attributes of an HTTP binary-mode event: each ``ce-*`` header, its value
    percent-decoded as UTF-8 (HTTP binding §3.1.3.2)."""
    attributes: dict[str, str] = {}
    for raw_name, raw_value in request.headers.raw:
        name = raw_name.decode("latin-1").lower()
        if name.startswith("ce-") and len(name) > 3:
            value = raw_value.decode("utf-8", errors="replace")
            attributes[name[3:]] = unquote(value, encoding="utf-8", errors="replace")
    return attributes


async def read_items(request: Request, settings: IngestSettings) -> list[Any]:
    body = parse_json(await read_body(request, settings.max_body_bytes))
    kind = media_type(request)
    if "ce-specversion" in request.headers:  # HTTP binary mode: attributes in ce-* headers
        if kind != "application/json":
            raise UnsupportedMediaType(f"binary-mode data must be application/json, not {kind!r}")
        return [{**binary_attributes(request), "data": body}]
    if kind == BATCH_TYPE or (kind == "application/json" and isinstance(body, list)):
        if not isinstance(body, list):
            raise BadRequest(f"{BATCH_TYPE} needs a JSON array of events")
        if not body:
            raise BadRequest("the batch is empty")
        if len(body) > settings.max_batch_items:
            raise PayloadTooLarge(
                f"the batch has {len(body)} events; the limit is {settings.max_batch_items}"
            )
        return body
    if kind not in SINGLE_TYPES:
        raise UnsupportedMediaType(
            f"content-type {kind!r}: send application/cloudevents+json, "
            f"application/json or {BATCH_TYPE}"
        )
    return [body]


@router.post(
    "/events",
    status_code=202,
    response_model=IngestResult,  # documents the body; rendered directly (no re-validation)
    openapi_extra=_EVENT_BODY,
    responses={
        400: {"description": "not JSON, or an empty batch"},
        403: {"description": "the key lacks events:write, or the events name another tenant"},
        413: {"description": "body or batch too large"},
        422: {"description": "no event was valid; detail says which and why"},
    },
)
async def post_events(
    request: Request, principal: EventsWriter, producer: ProducerDep, settings: SettingsDep
) -> Response:
    """Send one CloudEvent or a batch (cloudevents-batch+json); 202 once durably queued."""
    items = await read_items(request, settings)
    outcome = await accept(
        items,
        tenant=principal.tenant_id,
        api="cloudevents",
        settings=settings,
        producer=producer,
        phone_region=principal.phone_region,
    )
    return json_response(refuse_unless_accepted(outcome).as_dict(), status_code=202)


@router.get("/events", response_model=EventPage)
async def list_events(
    request: Request,
    principal: EventsReader,
    session: SessionDep,
    settings: SettingsDep,
    identifier: Annotated[
        str | None,
        Query(
            description='Only events naming this identifier: "type:value" (phone:+14155550123) '
            "or a bare value (every identifier type it is valid as). Not a customer id: ingest "
            "knows identifiers, journey resolves them to customers.",
            examples=["phone:+14155550123"],
        ),
    ] = None,
    customer: Annotated[
        str | None,
        Query(deprecated=True, description="The old name of `identifier` (same meaning)."),
    ] = None,
    type: Annotated[EventType | None, Query(description="Only this event type.")] = None,  # noqa: A002
    since: Annotated[UtcDateTime | None, Query(description="Only events at or after.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    reveal_sensitive: Annotated[
        bool, Query(description="Show sensitive values (needs the admin scope; audited).")
    ] = False,
) -> EventPage:
    """Stored events of the caller's tenant, newest first, filtered and keyset-paged; sensitive
    values (a fact's value, a message's text) are masked unless an admin reveals them."""
    if identifier is not None and customer is not None:
        raise Unprocessable(
            "pass identifier only (customer is its old name)",
            detail=[
                {
                    "loc": "query.customer",
                    "message": "customer is the old name of identifier; pass one of them",
                    "type": "value_error",
                }
            ],
        )
    identifier = identifier if identifier is not None else customer
    opener = None
    if reveal_sensitive:
        opener = await reveal.opener(
            session,
            request.app.state,
            principal,
            action="events.sensitive_revealed",
            target=identifier,
            detail={"type": type.value if type else None},
        )
    region = principal.region(settings.phone_region)
    keys = identifier_keys(identifier, phone_region=region) if identifier else None
    if identifier and not keys:
        return EventPage(items=[])
    rows = await repository.find_events(
        session,
        tenant_id=principal.tenant_id,
        identifier_keys=keys,
        event_type=type.value if type else None,
        since=since,
        limit=limit + 1,
        cursor=repository.Cursor.decode(cursor) if cursor else None,
    )
    items = [
        EventPublic(
            id=r["event_id"],
            type=r["type"],
            time=r["time"],
            received_at=r["received_at"],
            channel=r["channel"],
            identifiers=r["identifiers"],
            event=mask_event(r["envelope"], opener=opener),
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = repository.Cursor(last["time"], last["event_id"]).encode()
    return EventPage(items=items, next_cursor=next_cursor)


@router.get("/dead-letters", response_model=DeadLetterList)
async def list_dead_letters(
    principal: EventsReader,
    session: SessionDep,
    reason: Annotated[RejectReason | None, Query(description="Only this reason.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeadLetterList:
    """The caller's most recently refused events, with the reason for each; sensitive values
    are masked (stored masked: the dead-letter topic keeps the bytes for a redrive)."""
    rows = await repository.recent_dead_letters(
        session,
        tenant_id=principal.tenant_id,
        reason=reason.value if reason else None,
        limit=limit,
    )
    return DeadLetterList(
        items=[
            DeadLetterPublic.model_validate({**r, "payload": mask_payload(r["payload"])})
            for r in rows
        ]
    )


@router.get("/schema", tags=["schema"], response_class=Response)
async def event_schema() -> Response:
    """The JSON Schema (2020-12) of one Waypoint event, schema version 1."""
    return Response(SCHEMA_PATH.read_bytes(), media_type="application/schema+json")
