"""The analyst's journey map page (``/app/map``): filters, the graph (cytoscape + dagre, drawn
in the browser from the numbers embedded in the page), the same numbers as tables, drill-down
from an edge, node or variant to its journeys and on to a customer's timeline, and export.

Every number comes from the maps package's service functions (``map_views``), under the API's
scope (``analytics:read``) and the signed-in key's tenant. While the page is open, htmx re-reads
the graph and tables every ``REFRESH_SECONDS`` (the map is living). The journey-quality panels
(``/app/map/quality/{panel}``) load when first shown and are re-read on the same beat only while
on screen (map.js).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Annotated, Any
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from services.journey.conformance.schemas import NAME_PATTERN
from services.journey.maps import export, service
from services.journey.maps.rules import SEGMENTS
from services.journey.maps.schemas import ExportFormat, Granularity, JourneyKind, View
from services.journey.pages import map_quality
from services.journey.pages.map_quality import FCR_BY
from services.journey.pages.map_views import MapFilters, read_journeys, read_map, read_panel
from services.journey.quality.policy import parse_window
from shared.auth.models import Scope
from shared.errors import Unprocessable
from shared.web.auth import page_requires
from shared.web.sessions import WebSession
from shared.web.templating import render

router = APIRouter(prefix="/app/map", include_in_schema=False)
Analyst = Annotated[WebSession, Depends(page_requires(Scope.analytics_read))]
REFRESH_SECONDS = 30
SEGMENT_PATTERN = r"^$|^[a-z_]+=[^&=]+$"


def _day(name: str, value: str) -> date | None:
    if not value:
        return None  # an empty date field of the form means "no bound"
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Unprocessable(f"'{name}' must be a date like 2026-01-31, not {value!r}") from None


async def map_filters(
    granularity: Granularity = Granularity.touchpoint,
    journey: JourneyKind = JourneyKind.episode,
    view: View = View.performance,
    from_: Annotated[str, Query(alias="from", max_length=10)] = "",
    to: Annotated[str, Query(max_length=10)] = "",
    segment: Annotated[str, Query(max_length=200, pattern=SEGMENT_PATTERN)] = "",
    focus: Annotated[str, Query(max_length=300)] = "",
    mix: Annotated[str, Query(max_length=40)] = "age_group",
    fcr_window: Annotated[str, Query(max_length=8)] = "7d",
    fcr_by: Annotated[str, Query(max_length=20)] = "reason",
    design: Annotated[str, Query(max_length=64, pattern=r"^$|" + NAME_PATTERN)] = "",
) -> MapFilters:
    start, end = _day("from", from_), _day("to", to)
    if start and end and start > end:
        raise Unprocessable("'from' must not be after 'to'")
    if segment and segment.partition("=")[0] not in SEGMENTS:
        raise Unprocessable(f"segment: the trait must be one of {', '.join(SEGMENTS)}")
    if mix not in SEGMENTS:
        raise Unprocessable(f"mix: one of {', '.join(SEGMENTS)}")
    try:
        parse_window(fcr_window)
    except ValueError as exc:
        raise Unprocessable(f"fcr_window: {exc}") from None
    if fcr_by not in FCR_BY:
        raise Unprocessable(f"fcr_by: one of {', '.join(FCR_BY)}")
    if view is View.strategic:
        granularity = Granularity.stage  # the strategic view is the map by stage
    return MapFilters(
        granularity, journey, view, start, end, segment, focus, mix, fcr_window, fcr_by, design
    )


Filters = Annotated[MapFilters, Depends(map_filters)]


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pg_pool
    return pool


@router.get("")
async def map_page(request: Request, web: Analyst, filters: Filters) -> Response:
    """The map page; for htmx, only the part it asked for: ``map-body`` (the filters form
    swaps it) or ``map-live`` (the graph's numbers and the tables, polled while open)."""
    shown = await read_map(_pool(request), web.principal.tenant_id, filters)
    query = urlencode(filters.params())
    context: dict[str, Any] = {
        "filters": filters,
        "query": query,
        "map": shown,
        "refresh": REFRESH_SECONDS,
        "titles": map_quality.PANELS,
        "granularities": list(Granularity),
        "journeys": list(JourneyKind),
        "views": list(View),
        "traits": SEGMENTS,
        "can_see_customers": web.principal.allows(Scope.context_read),
    }
    target = request.headers.get("hx-target") if request.headers.get("hx-request") else None
    if target == "map-live":
        return render(request, "_map_live.html", context)
    if target == "map-body":
        return render(request, "_map_body.html", context)
    return render(request, "map.html", context)


Panel = Enum("Panel", {name: name for name in map_quality.PANELS}, type=str)  # type: ignore[misc]
# the selectors inside panels re-read their panel and put the choice in the page's address
SELECTORS = ("f-fcr_window", "f-fcr_by", "f-design")


def _as_of(value: str) -> datetime:
    """The moment the page was read (its panels' first load judges at it), else now."""
    now = map_quality.now()
    if not value:
        return now
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise Unprocessable(f"'as_of' must be a date-time like {now.isoformat()}") from None
    if at.tzinfo is None or not now - timedelta(days=400) <= at <= now + timedelta(seconds=5):
        raise Unprocessable("'as_of' must carry its UTC offset and be within the last 400 days")
    return at.astimezone(UTC)


@router.get("/quality/{panel}")
async def quality_panel(
    request: Request,
    web: Analyst,
    filters: Filters,
    panel: Panel,
    as_of: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    """One journey-quality panel of the map (htmx: loaded when shown, re-read while shown)."""
    name = str(panel.value)
    at = _as_of(as_of)
    found = await read_panel(_pool(request), web.principal.tenant_id, filters, name, at)
    query = urlencode(filters.params())
    headers = {}
    if request.headers.get("hx-trigger") in SELECTORS:
        headers["HX-Push-Url"] = "/app/map?" + query
    context: dict[str, Any] = {
        "filters": filters,
        "query": query,
        "panel": name,
        "titles": map_quality.PANELS,
        "map": {"quality": found},
        "can_see_customers": web.principal.allows(Scope.context_read),
    }
    return render(request, "_quality_panel.html", context, headers=headers)


@router.get("/journeys")
async def drill_down(
    request: Request,
    web: Analyst,
    filters: Filters,
    edge: Annotated[str | None, Query(max_length=600)] = None,
    node: Annotated[str | None, Query(max_length=300)] = None,
    variant: Annotated[str | None, Query(max_length=8000)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The journeys behind a number, each linking to its customer's card and timeline."""
    page = await read_journeys(
        _pool(request),
        web.principal.tenant_id,
        filters,
        edge=edge,
        node=node,
        variant=variant,
        cursor=cursor,
    )
    given = {k: v for k, v in (("edge", edge), ("node", node), ("variant", variant)) if v}
    more = None
    if page["next_cursor"]:
        more = "/app/map/journeys?" + urlencode(filters.params(**given, cursor=page["next_cursor"]))
    return render(
        request,
        "map_journeys.html",
        {
            "what": next(iter(given.items())),
            "page": page,
            "more": more,
            "back": "/app/map?" + urlencode(filters.params()),
            "can_see_customers": web.principal.allows(Scope.context_read),
        },
    )


@router.get("/export")
async def export_steps(
    request: Request,
    web: Analyst,
    filters: Filters,
    format: ExportFormat = ExportFormat.csv,  # noqa: A002
) -> StreamingResponse:
    """The step log behind the map as it is filtered, as CSV or XES (IEEE 1849), streamed."""
    pool = _pool(request)
    tenant = web.principal.tenant_id
    q = filters.map_query()
    async with pool.acquire() as conn:
        config = await service.config_of(conn, tenant)
    rows = export.export_rows(pool, tenant, q, config)
    if format is ExportFormat.csv:
        body, media = export.csv_stream(rows), "text/csv"
    else:
        body, media = export.xes_stream(rows), "application/xml"
    return StreamingResponse(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="journey-steps.{format.value}"'},
    )
