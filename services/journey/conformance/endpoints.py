"""Designed vs real journeys: declare a designed journey (``admin``), read how real journeys
conform to it (``analytics:read``). Tenant-scoped."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from services.journey.conformance import counts, health, service
from services.journey.conformance import repository as repo
from services.journey.conformance.schemas import (
    NAME_PATTERN,
    Conformance,
    ConformancePage,
    DesignedJourney,
    DesignedJourneyList,
    DesignedJourneyPublic,
)
from services.journey.deps import PoolDep, json_response
from services.journey.maps import export
from services.journey.maps.dependencies import map_params
from services.journey.maps.rules import SEGMENTS
from services.journey.maps.schemas import MapQuery, invalid
from services.journey.maps.service import config_of
from shared.auth.dependencies import Admin, AnalyticsReader
from shared.auth.service import audit
from shared.db import raw_connection
from shared.deps import DatabaseDep
from shared.errors import NotFound

HEALTH_SLOT = health.section  # imported for its registration in the health summary
router = APIRouter(prefix="/v1", tags=["designed journeys"])
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="`[a-z0-9][a-z0-9_-]{0,63}`")]


async def _design(pool: PoolDep, tenant: str, name: str) -> DesignedJourneyPublic:
    async with pool.acquire() as conn:
        found = await repo.get(conn, tenant, name)
    if found is None:
        raise NotFound(f"no designed journey {name!r}")
    return found


def _query(request: Request, q: MapQuery, design: DesignedJourneyPublic) -> MapQuery:
    """The design fixes the granularity; its journey kind applies unless the query names one."""
    d = design.definition
    if "granularity" in request.query_params and q.granularity != d.granularity.value:
        raise invalid("granularity", f"this designed journey is at {d.granularity.value}")
    journey = q.journey if "journey" in request.query_params else d.journey.value
    return MapQuery(d.granularity.value, journey, q.start, q.end, q.segment)


@router.put("/designed-journeys/{name}", response_model=DesignedJourneyPublic)
async def put_designed_journey(
    name: Name, body: DesignedJourney, principal: Admin, db: DatabaseDep
) -> DesignedJourneyPublic:
    """Declare how a journey is meant to go: ordered steps (activities at a granularity),
    optional steps, the longest expected wait before a step (admin; audited). A new design or
    version counts its conformance over the stored journeys before answering."""
    async with db.session() as session:
        conn = await raw_connection(session)
        saved = await repo.save(conn, principal.tenant_id, name, body)
        config = await config_of(conn, principal.tenant_id)
        if not await counts.is_counted(conn, principal.tenant_id, saved, config):
            # a new design or version: its counts from every stored journey, in this transaction
            await counts.recount(conn, principal.tenant_id, saved, config)
        await audit(
            session,
            tenant_id=principal.tenant_id,
            actor=f"key:{principal.key_id}",
            action="designed_journey.saved",
            target=name,
            detail={"version": saved.version, "definition": body.model_dump(mode="json")},
        )
    return saved


@router.get("/designed-journeys", response_model=DesignedJourneyList)
async def list_designed_journeys(pool: PoolDep, principal: AnalyticsReader) -> Response:
    """The tenant's designed journeys."""
    async with pool.acquire() as conn:
        found = await repo.all_of(conn, principal.tenant_id)
    return json_response({"items": [d.model_dump(mode="json") for d in found]})


@router.get("/designed-journeys/{name}", response_model=DesignedJourneyPublic)
async def get_designed_journey(name: Name, pool: PoolDep, principal: AnalyticsReader) -> Response:
    """One designed journey."""
    return json_response((await _design(pool, principal.tenant_id, name)).model_dump(mode="json"))


@router.delete("/designed-journeys/{name}", status_code=204)
async def delete_designed_journey(name: Name, principal: Admin, db: DatabaseDep) -> Response:
    """Remove a designed journey (admin; audited)."""
    async with db.session() as session:
        if not await repo.delete(await raw_connection(session), principal.tenant_id, name):
            raise NotFound(f"no designed journey {name!r}")
        await audit(
            session,
            tenant_id=principal.tenant_id,
            actor=f"key:{principal.key_id}",
            action="designed_journey.deleted",
            target=name,
            detail={},
        )
    return Response(status_code=204)


@router.get("/designed-journeys/{name}/conformance", response_model=Conformance)
async def designed_journey_conformance(
    request: Request,
    name: Name,
    pool: PoolDep,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("by", "limit"))],
    by: Annotated[
        str | None,
        Query(description="Also per value of a segment trait: age_group, region, tier, …"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Most frequent deviations.")] = 10,
) -> Response:
    """How real journeys conform: per-journey fitness 2·LCS(real, designed)/(|real| +
    |designed|), the share that fully conforms, the most frequent deviations (skipped,
    inserted, wrong order, too slow) with examples, optionally by segment."""
    if by is not None and by not in SEGMENTS:
        raise invalid("by", f"unknown segment trait {by!r}; known: {', '.join(SEGMENTS)}")
    design = await _design(pool, principal.tenant_id, name)
    q = _query(request, q, design)
    async with pool.acquire() as conn:
        config = await config_of(conn, principal.tenant_id)
        body = await service.conformance(
            conn, principal.tenant_id, design, config, q, by=by, limit=limit
        )
    return json_response(body)


@router.get("/designed-journeys/{name}/conformance/journeys", response_model=ConformancePage)
async def designed_journey_deviations(
    request: Request,
    name: Name,
    pool: PoolDep,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("deviation", "limit", "cursor"))],
    deviation: Annotated[
        str,
        Query(
            max_length=400,
            description="`kind:step` (`skipped:phone:agent_call`), `conforming` or `deviating`.",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The journeys behind a deviation (keyset-paged), with links to each timeline."""
    export.parse_cursor(cursor)
    try:
        match = service.deviation_filter(deviation)
    except ValueError as exc:
        raise invalid("deviation", str(exc)) from None
    design = await _design(pool, principal.tenant_id, name)
    q = _query(request, q, design)
    async with pool.acquire() as conn:
        config = await config_of(conn, principal.tenant_id)
        page = await service.journeys_page(
            conn, principal.tenant_id, design, config, q, match, limit=limit, cursor=cursor
        )
    return json_response({**q.echo(), **page})
