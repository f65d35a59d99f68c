"""The analyst's journey map page (``/app/map``): filters, the graph (cytoscape + dagre, drawn
in the browser from ``/app/map/data``), the same numbers as tables, drill-down and export.

PENDING(issue 8): the journey-map API (``services/journey/maps/``) is not on this branch yet.
Every number this page shows comes through ``fetch_map`` and ``fetch_journeys`` below, written
against the API's documented shape; until they are connected they raise ``MapPending`` and the
page says so. Connecting them is the only change the page needs (see each function's note).
"""

from __future__ import annotations

import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from shared.auth.service import Principal
from shared.errors import ServiceUnavailable, Unprocessable
from shared.web.auth import page_requires
from shared.web.sessions import WebSession
from shared.web.templating import render

# PENDING(issue 8): Scope.analytics_read once the map API adds it to shared/auth/models.py
# (admin keys hold it already; Principal.require accepts the scope's string).
ANALYTICS_READ = "analytics:read"

router = APIRouter(prefix="/app/map", include_in_schema=False)
Analyst = Annotated[WebSession, Depends(page_requires(ANALYTICS_READ))]


class Granularity(StrEnum):
    channel = "channel"
    touchpoint = "touchpoint"
    stage = "stage"


class JourneyDefinition(StrEnum):
    episode = "episode"
    customer = "customer"
    case = "case"


class View(StrEnum):
    performance = "performance"
    strategic = "strategic"
    tactical = "tactical"


class MapFilters(BaseModel):
    """The filters of the page, named as the map API's query parameters."""

    granularity: Granularity = Granularity.touchpoint
    journey: JourneyDefinition = JourneyDefinition.episode
    view: View = View.performance
    from_: date | None = Field(None, alias="from")
    to: date | None = None
    segment: str = Field("", max_length=200, pattern=r"^$|^[a-z_]+=[^&=]+$")
    focus: str = Field("", max_length=200)

    model_config = {"populate_by_name": True}

    def query(self, **extra: str) -> str:
        """The filters as a query string (for the data URL, drill-down and export links)."""
        params = {
            "granularity": self.granularity.value,
            "journey": self.journey.value,
            "view": self.view.value,
            "from": self.from_.isoformat() if self.from_ else "",
            "to": self.to.isoformat() if self.to else "",
            "segment": self.segment,
            "focus": self.focus,
            **extra,
        }
        return urlencode({k: v for k, v in params.items() if v})

    def api_params(self) -> dict[str, str]:
        """The map API's parameters: ``segment=age_group=65+`` becomes ``segment.age_group=65+``."""
        params = {
            "granularity": self.granularity.value,
            "journey": self.journey.value,
            "view": self.view.value,
        }
        if self.from_:
            params["from"] = self.from_.isoformat()
        if self.to:
            params["to"] = self.to.isoformat()
        if self.focus:
            params["focus"] = self.focus
        if self.segment:
            trait, _, value = self.segment.partition("=")
            params[f"segment.{trait}"] = value
        return params


def _day(name: str, value: str) -> date | None:
    if not value:
        return None  # an empty date field of the form means "no bound"
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Unprocessable(f"'{name}' must be a date like 2026-01-31, not {value!r}") from None


async def map_filters(
    granularity: Granularity = Granularity.touchpoint,
    journey: JourneyDefinition = JourneyDefinition.episode,
    view: View = View.performance,
    from_: Annotated[str, Query(alias="from", max_length=10)] = "",
    to: Annotated[str, Query(max_length=10)] = "",
    segment: Annotated[str, Query(max_length=200, pattern=r"^$|^[a-z_]+=[^&=]+$")] = "",
    focus: Annotated[str, Query(max_length=200)] = "",
) -> MapFilters:
    start, end = _day("from", from_), _day("to", to)
    if start and end and start > end:
        raise Unprocessable("'from' must not be after 'to'")
    return MapFilters(
        granularity=granularity,
        journey=journey,
        view=view,
        from_=start,
        to=end,
        segment=segment,
        focus=focus,
    )


Filters = Annotated[MapFilters, Depends(map_filters)]


class MapPending(ServiceUnavailable):
    error = "map_api_pending"

    def __init__(self) -> None:
        super().__init__(
            "the journey-map API (issue 8) is not part of this build yet; the graph and its "
            "tables fill in once it lands"
        )


async def fetch_map(request: Request, principal: Principal, filters: MapFilters) -> dict[str, Any]:
    """THE ONE PLACE the page reads the map's numbers, in this shape::

        {"graph": {"journeys": n, "steps": n,
                   "nodes": [{"id", "count", "starts", "ends", ...}],
                   "edges": [{"source", "target", "count",
                              "duration_s": {"mean", "p50", "p90"}, ...}]},
         "variants": [{"path": [activity, ...], "count": n, "share": 0..1}],
         "channel_switches": [{"from", "to", "count", "median_s"}],
         "channel_mix": [{"segment", "channel", "share"}]}

    PENDING(issue 8): call the maps package's service functions with
    ``principal.tenant_id`` and ``filters.api_params()`` (those of GET /v1/journey-map,
    /variants, /channel-switches and /v1/segments/channel-mix?by=<the segment's trait>), and
    map their answers onto the keys above. Nothing else in the page changes.
    """
    del request, principal, filters
    raise MapPending()


async def fetch_journeys(
    request: Request,
    principal: Principal,
    filters: MapFilters,
    *,
    edge: str | None,
    node: str | None,
) -> list[dict[str, Any]]:
    """Drill-down: the journeys behind an edge (``A>B``) or a node, each
    ``{"journey_id", "customer_id", "steps", "started_at"}``.

    PENDING(issue 8): GET /v1/journey-map/journeys?edge=A>B (or node=) through the maps
    package's service function.
    """
    del request, principal, filters, edge, node
    raise MapPending()


@router.get("")
async def map_page(request: Request, web: Analyst, filters: Filters) -> Response:
    """The map page; with ``HX-Request``, only its body (the filters form swaps it)."""
    try:
        data: dict[str, Any] | None = await fetch_map(request, web.principal, filters)
        pending = None
    except MapPending as exc:
        data, pending = None, exc.message
    context = {
        "filters": filters,
        "query": filters.query(),
        "data": data,
        "pending": pending,
        "granularities": list(Granularity),
        "journeys": list(JourneyDefinition),
        "views": list(View),
    }
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "map-body":
        return render(request, "_map_body.html", context)
    return render(request, "map.html", context)


@router.get("/data")
async def map_data(request: Request, web: Analyst, filters: Filters) -> Response:
    """The graph as JSON for the browser's drawing (same session, same scopes)."""
    try:
        data = await fetch_map(request, web.principal, filters)
    except MapPending as exc:
        return JSONResponse({"error": exc.error, "detail": exc.message}, status_code=503)
    return JSONResponse(data["graph"])


@router.get("/journeys")
async def drill_down(
    request: Request,
    web: Analyst,
    filters: Filters,
    edge: Annotated[str | None, Query(max_length=400)] = None,
    node: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The journeys behind a number, each linking to its customer's card and timeline."""
    try:
        journeys: list[dict[str, Any]] | None = await fetch_journeys(
            request, web.principal, filters, edge=edge, node=node
        )
        pending = None
    except MapPending as exc:
        journeys, pending = None, exc.message
    for j in journeys or []:
        j["customer_id"] = str(uuid.UUID(str(j["customer_id"])))
    return render(
        request,
        "map_journeys.html",
        {
            "edge": edge,
            "node": node,
            "journeys": journeys,
            "pending": pending,
            "back": "/app/map?" + filters.query(),
        },
    )


@router.get("/export")
async def export(
    request: Request,
    web: Analyst,
    filters: Filters,
    format: Annotated[str, Query(pattern="^(csv|xes)$")] = "csv",  # noqa: A002
) -> Response:
    """The step log as CSV or XES.

    PENDING(issue 8): stream GET /v1/journey-map/export?format=… through the maps package
    (a StreamingResponse with a Content-Disposition file name)."""
    del request, web, filters, format
    raise MapPending()
