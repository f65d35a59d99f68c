"""Journey map API: the map and its views, variants, channel switches, channel mix per segment,
drill-down to journeys, export; the tenant's map configuration. Tenant-scoped
(``analytics:read``; configuration changes need ``admin``)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from services.journey.experience import feedback_service
from services.journey.maps import export, service
from services.journey.maps import repository as repo
from services.journey.maps.dependencies import map_params
from services.journey.maps.rebuild import recompute_tenant
from services.journey.maps.schemas import (
    ChannelMix,
    ChannelSwitches,
    ExportFormat,
    JourneyMap,
    JourneyPage,
    MapConfigPublic,
    MapQuery,
    VariantPage,
    View,
    invalid,
)
from services.journey.maps.settings import MapConfig
from services.journey.quality import mapview as quality_map
from shared.auth.dependencies import Admin, AnalyticsReader
from shared.auth.service import audit
from shared.cursors import invalid_cursor
from shared.db import raw_connection
from shared.deps import DatabaseDep

router = APIRouter(prefix="/v1", tags=["journey map"])
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=512)]


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pg_pool
    return pool


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def _mapped(request: Request, tenant: str, q: MapQuery) -> tuple[service.Mapped, MapConfig]:
    async with _pool(request).acquire() as conn:
        config = await service.config_of(conn, tenant)
        loaded = await service.load(conn, tenant, q)
    return service.at_granularity(loaded, q.granularity, config), config


@router.get("/journey-map", response_model=JourneyMap)
async def journey_map(
    request: Request,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("view", "focus"))],
    view: Annotated[
        View | None,
        Query(description="strategic (by stage), tactical (around `focus`), performance."),
    ] = None,
    focus: Annotated[
        str | None, Query(max_length=300, description="The node a tactical view centres on.")
    ] = None,
) -> Response:
    """The map: nodes (activities) and directly-follows edges with counts and durations.
    ``segment.<trait>=<value>`` filters by segment."""
    if view is View.strategic:
        if "granularity" in request.query_params and q.granularity != "stage":
            raise invalid("granularity", "the strategic view is by stage")
        q = MapQuery("stage", q.journey, q.start, q.end, q.segment)
    if view is View.tactical and not focus:
        raise invalid("focus", "the tactical view needs a focus node")
    mapped, config = await _mapped(request, principal.tenant_id, q)
    body = service.build_map(mapped, q, config, view=view.value if view else None, focus=focus)
    async with _pool(request).acquire() as conn:  # feedback on steps (services/journey/experience)
        nodes = body["nodes"] + ([body["focus"]] if "focus" in body else [])
        await feedback_service.annotate(conn, principal.tenant_id, q, config, nodes)
    if view is View.performance:  # FCR and repeat contact per node (journey quality)
        async with _pool(request).acquire() as conn:
            await quality_map.annotate(conn, principal.tenant_id, q, body, config)
    return _json(body)


@router.get("/journey-map/variants", response_model=VariantPage)
async def journey_variants(
    request: Request,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("limit", "cursor"))],
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    """The most frequent complete paths (journey variants), with counts and share."""
    try:
        offset = int(cursor) if cursor else 0
    except ValueError:
        raise invalid_cursor() from None
    if offset < 0:
        raise invalid_cursor()
    async with _pool(request).acquire() as conn:
        config = await service.config_of(conn, principal.tenant_id)
        total, ordered = await service.variants(conn, principal.tenant_id, q, config)
    page = ordered[offset : offset + limit]
    return _json(
        {
            **q.echo(),
            "journeys": total,
            "variants": [
                {"path": list(p), "count": n, "share": round(n / total, 4)} for p, n in page
            ],
            "next_cursor": str(offset + limit) if offset + limit < len(ordered) else None,
        }
    )


@router.get("/journey-map/channel-switches", response_model=ChannelSwitches)
async def channel_switches(
    request: Request,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params())],
) -> Response:
    """The channel-to-channel matrix: how often customers switch, and how long it takes."""
    q = MapQuery("channel", q.journey, q.start, q.end, q.segment)
    mapped, _ = await _mapped(request, principal.tenant_id, q)
    return _json({**q.echo(), **service.channel_switches(mapped)})


@router.get("/segments/channel-mix", response_model=ChannelMix)
async def segment_channel_mix(
    request: Request,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("by"))],
    by: Annotated[str, Query(description="age_group, region, tier, lifecycle_stage or tenure.")],
) -> Response:
    """Each channel's share of steps, per value of a segment trait (e.g. age groups)."""
    from services.journey.maps.rules import SEGMENTS

    if by not in SEGMENTS:
        raise invalid("by", f"unknown segment trait {by!r}; known: {', '.join(SEGMENTS)}")
    if q.segment:
        raise invalid("segment", "channel-mix splits by one trait; it takes no segment filter")
    async with _pool(request).acquire() as conn:
        body = await service.channel_mix(conn, principal.tenant_id, q, by)
    return _json({**q.echo(), **body})


@router.get("/journey-map/journeys", response_model=JourneyPage)
async def journeys_behind(
    request: Request,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("edge", "node", "variant", "limit", "cursor"))],
    edge: Annotated[str | None, Query(max_length=600, description="`source>target`.")] = None,
    node: Annotated[str | None, Query(max_length=300)] = None,
    variant: Annotated[str | None, Query(max_length=8000, description="`a>b>c`.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """The journeys behind a number: those through an edge, a node, or of a variant, with
    links to each customer's timeline (paged)."""
    export.parse_cursor(cursor)  # a bad cursor is named before the other parameters
    async with _pool(request).acquire() as conn:
        config = await service.config_of(conn, principal.tenant_id)
        mapping, match = export.matcher(
            q.granularity, config, edge=edge, node=node, variant=variant
        )
        page = await export.journeys_page(
            conn, principal.tenant_id, q, mapping, match, limit=limit, cursor=cursor
        )
    return _json({**q.echo(), **page})


@router.get(
    "/journey-map/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/xml": {}}}},
)
async def export_log(
    request: Request,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("format"))],
    format: Annotated[ExportFormat, Query(description="csv or xes (IEEE 1849).")],  # noqa: A002
) -> StreamingResponse:
    """The step log (case_id, activity, timestamp, channel, touchpoint, segment), streamed."""
    pool = _pool(request)
    async with pool.acquire() as conn:
        config = await service.config_of(conn, principal.tenant_id)
    rows = export.export_rows(pool, principal.tenant_id, q, config)
    if format is ExportFormat.csv:
        return StreamingResponse(
            export.csv_stream(rows),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="journey-steps.csv"'},
        )
    return StreamingResponse(
        export.xes_stream(rows),
        media_type="application/xml",
        headers={"Content-Disposition": 'attachment; filename="journey-steps.xes"'},
    )


@router.get("/journey-map/config", response_model=MapConfigPublic)
async def get_map_config(request: Request, principal: AnalyticsReader) -> Response:
    """The tenant's map configuration: stage mapping, episode window, tenure bands."""
    async with _pool(request).acquire() as conn:
        config = await service.config_of(conn, principal.tenant_id)
    return _json({"config": config.model_dump(), "recomputed": False})


@router.put("/journey-map/config", response_model=MapConfigPublic)
async def put_map_config(body: MapConfig, principal: Admin, db: DatabaseDep) -> MapConfigPublic:
    """Replace the map configuration (admin; audited). A new episode window or new tenure bands
    recompute the tenant's journeys and aggregates from its step log before this returns."""
    tenant = principal.tenant_id
    async with db.session() as session:
        conn = await raw_connection(session)
        current = await service.config_of(conn, tenant)
        done = None
        if body.shapes_journeys_like(current):
            await repo.save_config(conn, tenant, body)
        else:
            done = await recompute_tenant(conn, tenant, body)
        await audit(
            session,
            tenant_id=tenant,
            actor=f"key:{principal.key_id}",
            action="journey_map.configured",
            target=tenant,
            detail={"config": body.model_dump(), "recomputed": done is not None},
        )
    return MapConfigPublic(
        config=body,
        recomputed=done is not None,
        customers=done.customers if done else None,
        seconds=round(done.seconds, 3) if done else None,
    )
