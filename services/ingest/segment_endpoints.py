"""Segment-compatible HTTP API: the write key is the HTTP Basic user name, as the SDKs send it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest.body import parse_json, read_body
from services.ingest.endpoints import SettingsDep, json_response, refuse_unless_accepted
from services.ingest.schemas import SegmentResult
from services.ingest.segment import SegmentError, batch_messages, to_cloud_event
from services.ingest.service import Refused, accept
from shared.auth.dependencies import EventsWriter
from shared.deps import ProducerDep
from shared.error_handlers import SEGMENT_ERRORS
from shared.errors import BadRequest, PayloadTooLarge
from shared.events import EventRejected, check_depth

router = APIRouter(prefix="/v1", tags=["segment"])
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "not JSON, or a batch body without a 'batch' array"},
    401: {"description": "no or unknown write key"},
    413: {"description": "body too large"},
    415: {"description": "a content-encoding other than gzip"},
    422: {"description": "no message could be mapped and validated"},
}
# The Segment spec's common fields, documented but not typed: like Segment's own API, a field
# of an unexpected type is ignored (or refuses that one message), never the whole request.
_FIELDS = {
    "type": "identify, track, alias, page, screen or group (batch items; else the path says)",
    "userId": "the user's id in your system (identifier user_id)",
    "anonymousId": "a device or cookie id (identifier anonymous_id)",
    "messageId": "unique per message: the event id, so retries are deduplicated",
    "timestamp": "when it happened (ISO 8601), corrected by sentAt",
    "sentAt": "when the SDK sent it",
    "event": "track: the event name",
    "name": "page / screen: its name",
    "previousId": "alias: the earlier id",
    "groupId": "group: the account id",
    "traits": "identify / group: traits (objects flattened, lists dropped)",
    "properties": "track / page / screen: properties",
    "context": "context.traits, context.channel, context.library …",
}
_MESSAGE: dict[str, Any] = {
    "type": "object",
    "description": "A Segment / RudderStack spec message (docs/events.md, Segment mapping).",
    "properties": {name: {"description": text} for name, text in _FIELDS.items()},
    "additionalProperties": True,
}
_BATCH: dict[str, Any] = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "description": "Messages; one that is not an object is refused on its own.",
            "items": {"description": "A message (see the single-call routes)."},
        },
        "context": {"description": "Merged into each message's context."},
        "sentAt": {"description": "When the SDK sent the batch."},
        "writeKey": {"description": "Ignored: the key is the HTTP Basic user name."},
    },
    "additionalProperties": True,
}


def _body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        },
        SEGMENT_ERRORS: True,
    }


_IDENTIFY_EXAMPLE = {
    "userId": "u-1001",
    "traits": {"email": "ada@example.com", "name": "Ada"},
    "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
}


def _map(messages: list[Any], tenant: str, kind: str | None, phone_region: str) -> list[Any]:
    mapped: list[Any] = []
    for message in messages:
        if kind is not None and isinstance(message, dict):
            message = {**message, "type": kind}
        item_id = message.get("messageId") if isinstance(message, dict) else None
        item_id = item_id if isinstance(item_id, str) else None
        try:
            check_depth(message)  # mapping flattens traits recursively
            mapped.append(to_cloud_event(message, tenant=tenant, phone_region=phone_region))
        except EventRejected as exc:
            mapped.append(Refused(exc.reason.value, exc.message, item_id))
        except SegmentError as exc:
            mapped.append(Refused("segment", str(exc), item_id))
    return mapped


async def _ingest(
    request: Request,
    principal: EventsWriter,
    producer: ProducerDep,
    settings: SettingsDep,
    kind: str | None,
) -> Response:
    body = parse_json(await read_body(request, settings.max_body_bytes))
    if kind is None:
        try:
            messages = batch_messages(body)
        except SegmentError as exc:
            raise BadRequest(str(exc)) from exc
        if len(messages) > settings.max_batch_items:
            raise PayloadTooLarge(
                f"the batch has {len(messages)} messages; the limit is {settings.max_batch_items}"
            )
        if not messages:
            return json_response({"success": True, "accepted": 0, "rejected": 0, "results": []})
    else:
        messages = [body]
    region = principal.region(settings.phone_region)
    items = _map(messages, principal.tenant_id, kind, region)
    outcome = await accept(
        items,
        tenant=principal.tenant_id,
        api="segment",
        settings=settings,
        producer=producer,
        phone_region=region,
    )
    return json_response({"success": True, **refuse_unless_accepted(outcome).as_dict()})


def _route(kind: str | None, summary: str) -> None:
    async def endpoint(
        request: Request, principal: EventsWriter, producer: ProducerDep, settings: SettingsDep
    ) -> Response:
        return await _ingest(request, principal, producer, settings, kind)

    endpoint.__doc__ = summary
    path = f"/{kind}" if kind else "/batch"
    endpoint.__name__ = f"segment_{kind or 'batch'}"
    example = {"batch": [{"type": "identify", **_IDENTIFY_EXAMPLE}]}
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        response_model=SegmentResult,  # documents the body; rendered directly
        responses=_RESPONSES,
        summary=summary.rstrip("."),
        openapi_extra=_body(_BATCH, example)
        if kind is None
        else _body(_MESSAGE, _IDENTIFY_EXAMPLE),
    )


_route("identify", "Segment identify: who the user is and their traits (identity.linked).")
_route("track", "Segment track: something the user did (a Waypoint type, purchase or product use).")
_route("alias", "Segment alias: two ids of one user (identity.linked).")
_route("page", "Segment page view (marketing.touched).")
_route("screen", "Segment mobile screen view (product.used).")
_route("group", "Segment group: the user's account (identity.linked with an account_id).")
_route(None, "Segment batch: many identify/track/alias/page/screen/group messages at once.")
