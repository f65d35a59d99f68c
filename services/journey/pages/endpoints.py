"""The agent desktop (``/app/agent``): search by any identifier (and the CTI screen-pop link
``/app/agent?identifier_type=phone&value=…``), the context card, its live updates over SSE,
recording a fact, and revealing sensitive facts (admin, audited). Same scopes as the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from services.journey.config import JourneySettings
from services.journey.context import service
from services.journey.context.schemas import FactCreate
from services.journey.context.stream import ContextHub
from services.journey.pages import cards
from shared.auth.models import Scope
from shared.errors import BadRequest, NotFound
from shared.privacy import reveal as privacy
from shared.privacy.masking import Opener
from shared.sse import Event, EventStream
from shared.unit_of_work import unit_of_work
from shared.web.auth import page_requires, page_writes
from shared.web.sessions import WebSession
from shared.web.templating import render

router = APIRouter(prefix="/app/agent", include_in_schema=False)

Reader = Annotated[WebSession, Depends(page_requires(Scope.context_read))]
Writer = Annotated[WebSession, Depends(page_writes(Scope.context_read))]
AdminWriter = Annotated[WebSession, Depends(page_writes(Scope.admin))]
TIMELINE_ITEMS = 15
# A live stream ends after this long and the browser reconnects: the session is re-checked.
STREAM_SECONDS = 300.0


async def _card(
    request: Request, found: service.Found, tenant: str, *, opener: Opener | None = None
) -> dict[str, Any]:
    pool: asyncpg.Pool = request.app.state.pg_pool
    settings: JourneySettings = request.app.state.settings
    reveal = opener is not None
    timeline = await service.timeline(
        pool,
        tenant,
        found.customer_id,
        limit=TIMELINE_ITEMS,
        cursor=None,
        reveal=reveal,
        opener=opener,
    )
    if opener is not None:
        found = service.opened(found, opener)
    return cards.card(
        found, now=datetime.now(UTC), reveal=reveal, settings=settings, timeline=timeline
    )


def _page(
    request: Request,
    web: WebSession,
    *,
    card: dict[str, Any] | None = None,
    identifier_type: str = "phone",
    value: str = "",
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "agent.html",
        {
            "card": card,
            "identifier_type": identifier_type,
            "value": value,
            "message": message,
            "identifier_types": cards.IDENTIFIER_TYPES,
            "fact_form": _fact_form_context(web),
        },
        status_code=status_code,
    )


def _fact_form_context(
    web: WebSession, errors: dict[str, str] | None = None, values: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "errors": errors or {},
        "values": values or {},
        "channels": cards.CHANNELS,
        "verifications": cards.VERIFICATIONS,
        "expiries": cards.EXPIRY_CHOICES,
        "can_reveal": web.principal.allows(Scope.admin),
    }


@router.get("")
async def agent_page(
    request: Request,
    web: Reader,
    identifier_type: Annotated[str, Query(max_length=32)] = "phone",
    value: Annotated[str, Query(max_length=320)] = "",
) -> Response:
    """Search, or the CTI screen pop when both query parameters are given."""
    if not value.strip():
        return _page(request, web, identifier_type=identifier_type)
    tenant = web.principal.tenant_id
    try:
        found = await service.find_by_identifier(
            request.app.state.pg_pool,
            tenant,
            identifier_type,
            value,
            kind="context",
            cache=request.app.state.cache,
            lookups=request.app.state.lookups,
            phone_region=web.principal.region(request.app.state.settings.phone_region),
        )
    except (NotFound, BadRequest) as exc:
        return _page(
            request,
            web,
            identifier_type=identifier_type,
            value=value,
            message=exc.message,
            status_code=exc.status_code,
        )
    card = await _card(request, found, tenant)
    return _page(request, web, card=card, identifier_type=identifier_type, value=value)


@router.get("/customers/{customer_id}")
async def customer_page(customer_id: uuid.UUID, request: Request, web: Reader) -> Response:
    """A customer's card by id (links from the journey map's drill-down and from alerts)."""
    found = await service.find_by_id(
        request.app.state.pg_pool,
        web.principal.tenant_id,
        customer_id,
        kind="customer",
        cache=request.app.state.cache,
    )
    return _page(request, web, card=await _card(request, found, web.principal.tenant_id))


@router.get("/customers/{customer_id}/live")
async def live_card(
    customer_id: uuid.UUID,
    request: Request,
    web: Reader,
    since: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventStream:
    """Server-sent events: the card, re-rendered, after every change of this customer."""
    tenant = web.principal.tenant_id
    pool: asyncpg.Pool = request.app.state.pg_pool
    hub: ContextHub = request.app.state.hub
    found = await service.find_by_id(pool, tenant, customer_id, kind="stream")
    shown = int(last_event_id) if last_event_id and last_event_id.isdigit() else since
    ends_at = asyncio.get_running_loop().time() + STREAM_SECONDS

    async def events() -> AsyncGenerator[Event, None]:
        with hub.subscribe(tenant, found.customer_id) as queue:
            # read again once subscribed: a change between the page (or the look-up above)
            # and the subscription would otherwise be missed
            current = await service.find_by_id(pool, tenant, found.customer_id, kind="stream")
            if current.version > shown:
                yield await _card_event(request, current, tenant)
            while (left := ends_at - asyncio.get_running_loop().time()) > 0:
                try:
                    version = await asyncio.wait_for(queue.get(), timeout=left)
                except TimeoutError:
                    break
                if 0 <= version <= current.version:
                    continue
                while not queue.empty():  # a burst of changes becomes one update
                    queue.get_nowait()
                current = await service.find_by_id(pool, tenant, current.customer_id, kind="stream")
                yield await _card_event(request, current, tenant)

    return EventStream(events(), shutdown=request.app.state.shutdown)


async def _card_event(request: Request, found: service.Found, tenant: str) -> Event:
    card = await _card(request, found, tenant)
    html = bytes(render(request, "_card.html", {"card": card}).body).decode()
    return Event(html, event="card", id=str(found.version))


def _expiry(choice: str, now: datetime) -> datetime | None:
    if not choice:
        return None
    if choice not in cards.EXPIRY_CHOICES:
        raise ValueError("choose one of the offered expiries")
    return now + timedelta(days=int(choice.rstrip("d")))


@router.post("/customers/{customer_id}/facts")
async def record_fact(customer_id: uuid.UUID, request: Request, web: Writer) -> Response:
    """Record a fact the customer just gave; the card shows it through the live stream."""
    form = await request.form()
    values = {k: str(v) for k, v in form.items() if k != "csrf_token"}
    now = datetime.now(UTC)
    errors: dict[str, str] = {}
    fact: FactCreate | None = None
    try:
        expires_at = _expiry(values.get("expires_in", ""), now)
    except ValueError as exc:
        errors["expires_in"] = str(exc)
        expires_at = None
    try:
        fact = FactCreate(
            name=values.get("name", "").strip(),
            value=values.get("value", "").strip() or None,
            sensitive=values.get("sensitive") == "on",
            verified_by=values.get("verified_by") or None,
            channel=values.get("channel") or None,
            agent_id=values.get("agent_id", "").strip() or None,
            expires_at=expires_at,
        )
    except ValidationError as exc:
        for e in exc.errors():
            errors[str(e["loc"][0]) if e["loc"] else "form"] = e["msg"]
    if fact is not None and fact.value is None:
        errors["value"] = "a value is needed"
    if errors or fact is None:
        return _fact_form(request, web, customer_id, errors=errors, values=values, status=422)
    async with unit_of_work(request.app.state.db) as session:  # answered once committed
        recorded = await service.record_fact(
            session,
            settings=request.app.state.settings,
            principal=web.principal,
            customer_id=customer_id,
            fact=fact.model_dump(mode="json", exclude_none=True),
            keyring=privacy.keyring(request.app.state),
        )
    if not request.headers.get("hx-request"):  # without JavaScript: back to the card
        return RedirectResponse(f"/app/agent/customers/{recorded['customer_id']}", 303)
    return _fact_form(
        request, web, customer_id, recorded=recorded["fact"], values={"agent_id": fact.agent_id}
    )


def _fact_form(
    request: Request,
    web: WebSession,
    customer_id: uuid.UUID,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    recorded: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "_fact_form.html",
        {
            "customer_id": str(customer_id),
            "fact_form": _fact_form_context(web, errors, values),
            "recorded": recorded,
        },
        status_code=status,
    )


@router.post("/customers/{customer_id}/reveal")
async def reveal_facts(customer_id: uuid.UUID, request: Request, web: AdminWriter) -> Response:
    """Show the sensitive values of the facts ledger (admin only; every reveal is audited)."""
    tenant = web.principal.tenant_id
    found = await service.find_by_id(request.app.state.pg_pool, tenant, customer_id, kind="context")
    async with request.app.state.db.session() as session:
        opener = await privacy.opener(
            session,
            request.app.state,
            web.principal,
            action="context.sensitive_revealed",
            target=str(found.customer_id),
            detail={"via": "pages"},
        )
    card = await _card(request, found, tenant, opener=opener)
    if not request.headers.get("hx-request"):
        return _page(request, web, card=card)
    return render(request, "_facts.html", {"card": card})
