"""Experience by journey position, moments of truth, and feedback on the map's nodes
(``analytics:read``, tenant-scoped)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from services.journey.deps import PoolDep, json_response
from services.journey.experience import feedback, feedback_service, health, service
from services.journey.experience.schemas import Author, ExperienceReport, FeedbackPage
from services.journey.maps.dependencies import map_params
from services.journey.maps.schemas import MapQuery
from services.journey.maps.service import config_of
from shared.auth.dependencies import AnalyticsReader

router = APIRouter(prefix="/v1", tags=["experience"])
HEALTH_SLOT = health.section  # imported for its registration in the health summary


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


@router.get("/feedback", response_model=FeedbackPage)
async def list_feedback(
    pool: PoolDep,
    principal: AnalyticsReader,
    q: Annotated[MapQuery, Depends(map_params("node", "author", "limit", "cursor"))],
    node: Annotated[
        str | None,
        Query(max_length=300, description="A map node at the granularity (`phone:agent_call`)."),
    ] = None,
    author: Annotated[Author | None, Query(description="customer or agent.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Feedback from customers and agents on a node of the map, newest first, comments masked
    (e-mails, phone numbers, long digit runs); with the node's summary. Paged."""
    after = feedback_service.decode_cursor(cursor)
    async with pool.acquire() as conn:
        config = await config_of(conn, principal.tenant_id)
        found = await feedback_service.items(conn, principal.tenant_id, q, config)
    if node is not None:
        found = [i for i in found if i["node"] == node]
    if author is not None:
        found = [i for i in found if i["author"] == author.value]
    summary = feedback.summaries([{**i, "node": "*"} for i in found]).get("*", feedback.EMPTY)
    chosen, next_cursor = feedback_service.page(found, after=after, limit=limit)
    return json_response(
        {
            **q.echo(),
            "node": node,
            "summary": summary,
            "items": chosen,
            "next_cursor": next_cursor,
        }
    )
