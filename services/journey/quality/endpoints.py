"""Journey quality API: pain points (and the steps behind each), FCR and repeat contact, the
tenant's FCR policy, the journey health summary. Tenant-scoped (``analytics:read``; the policy
write needs ``admin``)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from services.journey.maps.rules import EPOCH
from services.journey.maps.schemas import invalid
from services.journey.quality import fcr, health, pain
from services.journey.quality import repository as repo
from services.journey.quality.policy import FcrPolicy, parse_window
from services.journey.quality.schemas import (
    BY_SEGMENT,
    AffectedPage,
    FcrPolicyPublic,
    FcrReport,
    JourneyHealth,
    PainReport,
    Range,
    parse_by,
    quality_params,
)
from shared.auth.dependencies import Admin, AnalyticsReader
from shared.auth.service import audit
from shared.cursors import invalid_cursor
from shared.db import raw_connection
from shared.deps import DatabaseDep

router = APIRouter(prefix="/v1", tags=["journey quality"])
FCR_BY = ("reason", "channel", "agent_team", *BY_SEGMENT)
PAIN_BY = ("touchpoint", "channel", "edge", *BY_SEGMENT)
MAX_WINDOWS = 6


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pg_pool
    return pool


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _windows(text: str | None) -> tuple[tuple[str, int], ...]:
    if not text:
        return ()
    labels = [w.strip() for w in text.split(",") if w.strip()]
    if len(labels) > MAX_WINDOWS:
        raise invalid("windows", f"at most {MAX_WINDOWS} windows")
    out = []
    for label in labels:
        try:
            out.append((label, parse_window(label)))
        except ValueError as exc:
            raise invalid("windows", str(exc)) from None
    if len({us for _, us in out}) != len(out):
        raise invalid("windows", "a window is listed twice")
    return tuple(out)


@router.get("/fcr-policy", response_model=FcrPolicyPublic)
async def get_fcr_policy(request: Request, principal: AnalyticsReader) -> Response:
    """The tenant's FCR policy (the defaults until one is set)."""
    async with _pool(request).acquire() as conn:
        policy = await repo.policy_of(conn, principal.tenant_id)
    return _json({"policy": policy.model_dump()})


@router.put("/fcr-policy", response_model=FcrPolicyPublic)
async def put_fcr_policy(body: FcrPolicy, principal: Admin, db: DatabaseDep) -> FcrPolicyPublic:
    """Replace the FCR policy (admin; audited). Applies to the next read: nothing is stored
    per window, so nothing is recomputed."""
    async with db.session() as session:
        await repo.save_policy(await raw_connection(session), principal.tenant_id, body)
        await audit(
            session,
            tenant_id=principal.tenant_id,
            actor=f"key:{principal.key_id}",
            action="fcr_policy.configured",
            target=principal.tenant_id,
            detail={"policy": body.model_dump()},
        )
    return FcrPolicyPublic(policy=body)


@router.get("/fcr", response_model=FcrReport)
async def fcr_report(
    request: Request,
    principal: AnalyticsReader,
    r: Annotated[Range, Depends(quality_params("by", "windows"))],
    by: Annotated[
        str | None,
        Query(description="reason, channel, agent_team or segment.<trait> (default: totals)."),
    ] = None,
    windows: Annotated[
        str | None,
        Query(max_length=100, description="Windows side by side with the policy's: `1d,7d,30d`."),
    ] = None,
) -> Response:
    """First-contact resolution and repeat contact of the contacts in the range: per window,
    contacts judged, resolved, repeated, still open; agent-declared vs observed."""
    group = parse_by(by, FCR_BY)
    q = fcr.FcrQuery(r.start, r.end, r.as_of_us, group, _windows(windows), r.segment)
    async with _pool(request).acquire() as conn:
        policy = await repo.policy_of(conn, principal.tenant_id)
        if fcr.answerable(q, policy):  # the day counts: exact, and fast on big logs
            body = await fcr.report_from_days(conn, principal.tenant_id, q, policy)
        else:
            body = await fcr.report(conn, principal.tenant_id, q, policy)
    return _json({**r.echo(), "by": group, "policy": policy.model_dump(), **body})


@router.get("/pain-points", response_model=PainReport)
async def pain_points(
    request: Request,
    principal: AnalyticsReader,
    r: Annotated[Range, Depends(quality_params("by", "kind", "limit", "long_wait_s"))],
    by: Annotated[str, Query(description="touchpoint, channel, edge or segment.<trait>.")] = (
        "touchpoint"
    ),
    kind: Annotated[str | None, Query(description="Only this kind of pain point.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    long_wait_s: Annotated[float, Query(gt=0, le=86_400)] = 300.0,
) -> Response:
    """Where journeys hurt, ranked by impact (affected × severity), with the change against the
    previous period of equal length and an example journey per row."""
    q = _pain_query(r, by, kind, long_wait_s)
    async with _pool(request).acquire() as conn:
        policy = await repo.policy_of(conn, principal.tenant_id)
        body = await pain.report(conn, principal.tenant_id, q, policy, limit=limit)
    return _json({**r.echo(), **body})


def _pain_query(r: Range, by: str, kind: str | None, long_wait_s: float) -> pain.PainQuery:
    group = parse_by(by, PAIN_BY)
    assert group is not None
    if kind is not None and kind not in pain.KINDS:
        raise invalid("kind", f"unknown kind {kind!r}; known: {', '.join(pain.KINDS)}")
    return pain.PainQuery(
        group, r.start, r.end, r.as_of_us, r.segment, round(long_wait_s * 1000), kind
    )


def _cursor(text: str | None) -> tuple[int, str, str] | None:
    if not text:
        return None
    try:
        at, customer, step = orjson.loads(base64.urlsafe_b64decode(text.encode()))
        if not isinstance(at, int) or not isinstance(customer, str) or not isinstance(step, str):
            raise ValueError(text)
        return at, customer, step
    except (ValueError, TypeError) as exc:
        raise invalid_cursor() from exc


@router.get("/pain-points/journeys", response_model=AffectedPage)
async def pain_point_journeys(
    request: Request,
    principal: AnalyticsReader,
    r: Annotated[
        Range, Depends(quality_params("by", "kind", "key", "limit", "cursor", "long_wait_s"))
    ],
    kind: Annotated[str, Query(description="The pain point's kind.")],
    key: Annotated[str, Query(max_length=700, description="The pain point's key.")],
    by: str = "touchpoint",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    long_wait_s: Annotated[float, Query(gt=0, le=86_400)] = 300.0,
) -> Response:
    """The steps behind one pain point (newest first, paged), each with its journey and a link
    to the customer's timeline."""
    after = _cursor(cursor)
    q = _pain_query(r, by, kind, long_wait_s)
    async with _pool(request).acquire() as conn:
        policy = await repo.policy_of(conn, principal.tenant_id)
        rows = await pain.affected_steps(
            conn, principal.tenant_id, q, policy, key=key, after=after, limit=limit + 1
        )
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "customer_id": row[0],
            "journey_key": row[2],
            "step_key": row[1],
            "at": (EPOCH + timedelta(microseconds=row[3])).isoformat(),
            "activity": row[4],
            "channel": row[5],
            "reason": row[6],
            "timeline": f"/v1/customers/{row[0]}/timeline",
        }
        for row in rows
    ]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = base64.urlsafe_b64encode(orjson.dumps([last[3], last[0], last[1]])).decode()
    return _json({**r.echo(), "kind": kind, "by": by, "key": key, "items": items,
                  "next_cursor": next_cursor})  # fmt: skip


@router.get("/journey-health", response_model=JourneyHealth)
async def journey_health(
    request: Request,
    principal: AnalyticsReader,
    r: Annotated[Range, Depends(quality_params())],
) -> Response:
    """The numbers a CX lead reads first, each against the previous period of equal length."""
    async with _pool(request).acquire() as conn:
        policy = await repo.policy_of(conn, principal.tenant_id)
        body = await health.summary(conn, principal.tenant_id, r, policy)
    return _json({**r.echo(), **body})
