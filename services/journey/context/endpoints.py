"""The agent's context API: screen pop, context, timeline, route hint, live stream, facts.
Tenant-scoped (``context:read``, revealing sensitive facts ``admin``); another tenant's id is a
404."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.config import JourneySettings
from services.journey.context import service, views
from services.journey.context.schemas import (
    ContextPublic,
    FactCreate,
    FactRecorded,
    RouteHint,
    TimelinePage,
)
from services.journey.context.stream import ContextHub
from services.journey.deps import PoolDep, SettingsDep, command_once, json_response
from shared.auth.dependencies import ContextReader, ContextStreamReader
from shared.auth.models import Scope
from shared.auth.service import Principal
from shared.deps import DatabaseDep, IdempotencyKeyDep
from shared.errors import NotFound
from shared.privacy import reveal as privacy
from shared.privacy.masking import Opener
from shared.sse import Event, EventStream
from shared.unit_of_work import unit_of_work

router = APIRouter(prefix="/v1", tags=["context"])

IdentifierType = Annotated[str, Query(description="phone, email, crm_id, chat_session, …")]
IdentifierValue = Annotated[str, Query(min_length=1, max_length=320)]
Reveal = Annotated[
    bool,
    Query(
        description="Show sensitive fact values and message excerpts (needs the admin scope; "
        "audited)."
    ),
]


async def _reveal(
    request: Request, principal: Principal, reveal: bool, customer_id: str
) -> Opener | None:
    if not reveal:
        return None
    async with unit_of_work(request.app.state.db) as session:
        return await privacy.opener(
            session,
            request.app.state,
            principal,
            action="context.sensitive_revealed",
            target=customer_id,
        )


@router.get("/context", responses={200: {"model": ContextPublic}})
async def context_by_identifier(
    request: Request,
    principal: ContextReader,
    identifier_type: IdentifierType,
    value: IdentifierValue,
    reveal_sensitive: Reveal = False,
) -> Response:
    """Screen pop: the customer's context by any identifier, normalized as ingest normalizes."""
    # Ordinary requests never get here: services/journey/context/fast.py serves them with
    # ``screen_pop`` below, without FastAPI's per-request layers.
    return await screen_pop(request, principal, identifier_type, value, reveal_sensitive)


async def screen_pop(
    request: Request, principal: Principal, identifier_type: str, value: str, reveal: bool
) -> Response:
    """The screen pop's work once the caller is authenticated and its scope checked (the
    FastAPI route calls this; the fast path calls ``masked_screen_pop`` as this does: one place
    for look-up, reveal and masking)."""
    if not reveal:
        body = await masked_screen_pop(request.app.state, principal, identifier_type, value)
        return Response(body, media_type="application/json")
    state = request.app.state
    found = await service.find_by_identifier(
        state.pg_pool,
        principal.tenant_id,
        identifier_type,
        value,
        phone_region=principal.region(state.settings.phone_region),
        kind="context",
        cache=state.cache,
        lookups=state.lookups,
    )
    opener = await _reveal(request, principal, reveal, str(found.customer_id))
    if opener is not None:
        found = service.opened(found, opener)
    view = service.context_view(found, now=datetime.now(UTC), reveal=opener is not None)
    return json_response(view)


async def masked_screen_pop(
    state: Any, principal: Principal, identifier_type: str, value: str
) -> bytes:
    """The masked card's JSON body (sensitive facts and excerpts masked), from the context
    cache's rendered cards when it holds a valid one."""
    return await service.screen_pop_card(
        state.pg_pool,
        principal.tenant_id,
        identifier_type,
        value,
        phone_region=principal.region(state.settings.phone_region),
        cache=state.cache,
        lookups=state.lookups,
    )


@router.get("/customers/{customer_id}/context", responses={200: {"model": ContextPublic}})
async def customer_context(
    customer_id: uuid.UUID,
    request: Request,
    principal: ContextReader,
    reveal_sensitive: Reveal = False,
) -> Response:
    """A customer's context by id (a merged id answers with the surviving customer)."""
    found = await service.find_by_id(
        request.app.state.pg_pool,
        principal.tenant_id,
        customer_id,
        kind="customer",
        cache=request.app.state.cache,
    )
    opener = await _reveal(request, principal, reveal_sensitive, str(found.customer_id))
    if opener is not None:
        found = service.opened(found, opener)
    view = service.context_view(found, now=datetime.now(UTC), reveal=opener is not None)
    return json_response(view)


@router.get("/customers/{customer_id}/timeline", response_model=TimelinePage)
async def customer_timeline(
    customer_id: uuid.UUID,
    request: Request,
    principal: ContextReader,
    pool: PoolDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    reveal_sensitive: Reveal = False,
) -> Response:
    """Cross-channel timeline, newest first, with message excerpts, facts and orders; pass
    ``next_cursor`` back to page."""
    opener = None
    if reveal_sensitive:
        principal.require(Scope.admin)  # refused before anything is read
        opener = await _reveal(request, principal, True, str(customer_id))
    page = await service.timeline(
        pool,
        principal.tenant_id,
        customer_id,
        limit=min(limit, settings.timeline_page_max),
        cursor=cursor,
        reveal=reveal_sensitive,
        opener=opener,
    )
    return json_response(page)


@router.get("/route-hint", response_model=RouteHint)
async def route_hint(
    request: Request,
    principal: ContextReader,
    identifier_type: IdentifierType,
    value: IdentifierValue,
) -> Response:
    """For IVR/CTI: preferred agent and team, whether to skip the IVR menu, and why."""
    settings: JourneySettings = request.app.state.settings
    try:
        found = await service.find_by_identifier(
            request.app.state.pg_pool,
            principal.tenant_id,
            identifier_type,
            value,
            phone_region=principal.region(settings.phone_region),
            kind="route_hint",
            cache=request.app.state.cache,
            lookups=request.app.state.lookups,
        )
    except NotFound:
        return json_response(
            {
                "known": False,
                "customer_id": None,
                "preferred_agent": None,
                "preferred_team": None,
                "skip_ivr": False,
                "open_case": None,
                "reasons": ["unknown caller: keep the IVR menu"],
            }
        )
    hint = views.route_hint(
        found.doc,
        now=datetime.now(UTC),
        skip_ivr_hours=settings.skip_ivr_hours,
        preferred_agent_hours=settings.preferred_agent_hours,
    )
    return json_response({"known": True, "customer_id": str(found.customer_id), **hint})


@router.get(
    "/customers/{customer_id}/stream",
    response_class=EventStream,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def customer_stream(
    customer_id: uuid.UUID, request: Request, principal: ContextStreamReader, pool: PoolDep
) -> EventStream:
    """Server-sent events: the context now, then ``context.changed`` after every change."""
    tenant = principal.tenant_id
    found = await service.find_by_id(pool, tenant, customer_id, kind="stream")
    hub: ContextHub = request.app.state.hub

    async def events() -> AsyncGenerator[Event, None]:
        with hub.subscribe(tenant, found.customer_id) as queue:
            current = found
            yield _sse("context", current)
            while True:
                version = await queue.get()
                if 0 <= version <= current.version:
                    continue
                while not queue.empty():  # coalesce bursts into one update
                    queue.get_nowait()
                current = await service.find_by_id(pool, tenant, found.customer_id, kind="stream")
                yield _sse("context.changed", current)

    return EventStream(events(), shutdown=request.app.state.shutdown)


def _sse(name: str, found: service.Found) -> Event:
    view = service.context_view(found, now=datetime.now(UTC), reveal=False)
    return Event(orjson.dumps(view).decode(), event=name, id=str(found.version))


@router.post("/customers/{customer_id}/facts", status_code=201, response_model=FactRecorded)
async def add_fact(
    customer_id: uuid.UUID,
    body: FactCreate,
    request: Request,
    principal: ContextReader,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """An agent records a fact the customer gave (kept in the facts ledger with provenance); a
    sensitive value is stored encrypted and answered masked. Answers once committed; with an
    ``Idempotency-Key``, a retry records the fact once."""
    fact = body.model_dump(mode="json", exclude_none=True)
    keyring = privacy.keyring(request.app.state)

    async def command(session: AsyncSession) -> dict[str, Any]:
        return await service.record_fact(
            session,
            settings=settings,
            principal=principal,
            customer_id=customer_id,
            fact=fact,
            keyring=keyring,
        )

    return await command_once(
        request, db, settings, principal, idempotency_key, fact, command, status_code=201
    )
