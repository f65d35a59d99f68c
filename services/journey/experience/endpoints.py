"""Experience by journey position and moments of truth (``analytics:read``, tenant-scoped)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from services.journey.deps import PoolDep, json_response
from services.journey.experience import service
from services.journey.experience.schemas import ExperienceReport
from services.journey.maps.schemas import MapQuery, map_params
from services.journey.maps.service import config_of
from shared.auth.dependencies import AnalyticsReader

router = APIRouter(prefix="/v1", tags=["experience"])


@router.get("/experience", response_model=ExperienceReport)
async def get_experience(
    pool: PoolDep,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("max_moments", "min_sample"))],
    max_moments: Annotated[
        int, Query(ge=0, le=20, description="Report at most this many moments of truth.")
    ] = 5,
    min_sample: Annotated[
        int,
        Query(ge=5, le=100_000, description="Units needed on each side to test a feature."),
    ] = 30,
) -> Response:
    """CSAT, NPS and CES by journey position (touchpoint, edge into it, transfers and repeats
    before the survey, stage), and the moments of truth: the steps and outcomes with the
    largest significant effect on CSAT, NPS and churn, with sample sizes and 95 % intervals."""
    async with pool.acquire() as conn:
        config = await config_of(conn, principal.tenant_id)
        body = await service.experience(
            conn,
            principal.tenant_id,
            q,
            config,
            min_sample=min_sample,
            max_moments=max_moments,
        )
    return json_response(body)
