"""The alerts HTTP API: alerts, engagement scores, the engagement model, channels, churn."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from services.alerts import repository
from services.alerts.backtest import backtest
from services.alerts.model import EngagementModel, Rule
from services.alerts.schemas import (
    AccountEngagement,
    AlertAction,
    AlertPage,
    AlertPublic,
    AlertStatus,
    BacktestReport,
    ChannelsIn,
    ChannelsPublic,
    ChurnReport,
    CustomerEngagement,
    ModelPublic,
)
from shared.auth.dependencies import AlertsReader, AlertsWriter
from shared.auth.service import audit
from shared.cursors import cursor_time, invalid_cursor
from shared.deps import SessionDep
from shared.egress import check_url, policy_from
from shared.errors import Unprocessable
from shared.guards import UtcDateTime

router = APIRouter(prefix="/v1", tags=["alerts"])


def _encode_cursor(alert: AlertPublic) -> str:
    return base64.urlsafe_b64encode(f"{alert.opened_at.isoformat()}|{alert.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The cursor ``_encode_cursor`` made, or a 422 naming the ``cursor`` parameter."""
    try:
        at, _, alert_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return cursor_time(at), uuid.UUID(alert_id)
    except ValueError as exc:  # base64, UTF-8 or the id
        raise invalid_cursor() from exc


@router.get("/alerts", response_model=AlertPage)
async def list_alerts(
    principal: AlertsReader,
    session: SessionDep,
    status: AlertStatus | None = None,
    owner: str | None = None,
    rule: Rule | None = None,
    customer_id: str | None = None,
    account_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertPage:
    """List the tenant's alerts, newest first (filter by status, owner, rule, customer, account;
    paged with `next_cursor`)."""
    rows = await repository.list_alerts(
        session,
        principal.tenant_id,
        status=status.value if status else None,
        owner=owner,
        rule=rule.value if rule else None,
        customer_id=customer_id,
        account_id=account_id,
        cursor=_decode_cursor(cursor) if cursor else None,
        limit=limit + 1,
    )
    items = [AlertPublic.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return AlertPage(items=items, next_cursor=_encode_cursor(items[-1]) if more else None)


@router.get("/alerts/{alert_id}", response_model=AlertPublic)
async def get_alert(
    alert_id: uuid.UUID, principal: AlertsReader, session: SessionDep
) -> AlertPublic:
    """One alert with its explanation and notes."""
    return AlertPublic.model_validate(
        await repository.get_alert(session, principal.tenant_id, alert_id)
    )


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic)
async def acknowledge_alert(
    alert_id: uuid.UUID,
    principal: AlertsWriter,
    session: SessionDep,
    body: AlertAction | None = None,
) -> AlertPublic:
    """Acknowledge an open alert (optionally with a note)."""
    row = await repository.transition(
        session,
        principal.tenant_id,
        alert_id,
        to="acknowledged",
        actor=f"key:{principal.key_id}",
        note=body.note if body else None,
    )
    return AlertPublic.model_validate(row)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertPublic)
async def resolve_alert(
    alert_id: uuid.UUID,
    principal: AlertsWriter,
    session: SessionDep,
    body: AlertAction | None = None,
) -> AlertPublic:
    """Resolve an alert by hand (optionally with a note); its rules stay disarmed until the
    score recovers."""
    row = await repository.transition(
        session,
        principal.tenant_id,
        alert_id,
        to="resolved",
        actor=f"key:{principal.key_id}",
        note=body.note if body else None,
    )
    return AlertPublic.model_validate(row)


@router.get("/customers/{customer_id}/engagement", response_model=CustomerEngagement)
async def customer_engagement(
    customer_id: str,
    principal: AlertsReader,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CustomerEngagement:
    """A customer's engagement score, factor contributions and score history (newest first)."""
    return CustomerEngagement.model_validate(
        await repository.customer_engagement(session, principal.tenant_id, customer_id, limit=limit)
    )


@router.get("/accounts/{account_id}/engagement", response_model=AccountEngagement)
async def account_engagement(
    account_id: str, principal: AlertsReader, session: SessionDep
) -> AccountEngagement:
    """An account's engagement: the mean of its customers' scores, and each customer's."""
    return AccountEngagement.model_validate(
        await repository.account_engagement(session, principal.tenant_id, account_id)
    )


@router.get("/engagement-model", response_model=ModelPublic)
async def get_engagement_model(principal: AlertsReader, session: SessionDep) -> ModelPublic:
    """The tenant's engagement model (version 0: the built-in default)."""
    model, version, updated_at = await repository.get_model(session, principal.tenant_id)
    return ModelPublic(version=version, updated_at=updated_at, model=model.model_dump(mode="json"))


@router.put(
    "/engagement-model",
    response_model=ModelPublic,
    responses={422: {"description": "the model is invalid; detail says what is wrong"}},
)
async def put_engagement_model(
    model: EngagementModel, principal: AlertsWriter, session: SessionDep
) -> ModelPublic:
    """Replace the tenant's engagement model (weights, thresholds, segments); every customer is
    rescored with it on the scheduler's next pass, and at once on their next event."""
    version = await repository.put_model(
        session, principal.tenant_id, model, actor=f"key:{principal.key_id}"
    )
    await audit(
        session,
        tenant_id=principal.tenant_id,
        actor=f"key:{principal.key_id}",
        action="engagement_model.updated",
        detail={"version": version},
    )
    _, version, updated_at = await repository.get_model(session, principal.tenant_id)
    return ModelPublic(version=version, updated_at=updated_at, model=model.model_dump(mode="json"))


@router.get("/notification-channels", response_model=ChannelsPublic)
async def get_channels(principal: AlertsReader, session: SessionDep) -> ChannelsPublic:
    """The tenant's notification channels (secret URLs and signing secrets only as hints)."""
    return ChannelsPublic.model_validate(
        {"channels": await repository.list_channels(session, principal.tenant_id)}
    )


@router.put(
    "/notification-channels",
    response_model=ChannelsPublic,
    responses={422: {"description": "a channel is incomplete; detail says which"}},
)
async def put_channels(
    body: ChannelsIn, request: Request, principal: AlertsWriter, session: SessionDep
) -> ChannelsPublic:
    """Replace the tenant's notification channels (webhook, slack, email). A destination that
    is not public (loopback, private, link-local, metadata …) is refused unless the operator
    allowed it (``WAYPOINT_EGRESS_ALLOW``); deliveries check again after DNS resolution."""
    policy = policy_from(request.app.state.settings.egress_allow)
    urls = [(c.name, str(c.url)) for c in body.channels if c.url is not None]
    reasons = await asyncio.gather(*(check_url(url, policy) for _, url in urls))
    problems = [
        f"channel {name!r}: {why}" for (name, _), why in zip(urls, reasons, strict=True) if why
    ]
    if problems:
        raise Unprocessable("; ".join(problems))
    problems = await repository.replace_channels(session, principal.tenant_id, body.channels)
    if problems:
        raise Unprocessable("; ".join(problems))
    await audit(
        session,
        tenant_id=principal.tenant_id,
        actor=f"key:{principal.key_id}",
        action="notification_channels.updated",
        detail={"channels": [c.name for c in body.channels]},
    )
    return ChannelsPublic.model_validate(
        {"channels": await repository.list_channels(session, principal.tenant_id)}
    )


@router.get("/churn/reasons", response_model=ChurnReport)
async def churn_reasons(
    principal: AlertsReader, session: SessionDep, since: UtcDateTime | None = None
) -> ChurnReport:
    """Churn and renewal reasons by segment, with how many were alerted and how early."""
    rows = await repository.churn_reasons(session, principal.tenant_id, since=since)
    return ChurnReport.model_validate({"since": since, "rows": rows})


@router.get("/churn/backtest", response_model=BacktestReport)
async def churn_backtest(
    principal: AlertsReader,
    session: SessionDep,
    thresholds: Annotated[list[float], Query(min_length=1, max_length=20)],
    since: UtcDateTime | None = None,
    horizon_days: Annotated[int, Query(ge=1, le=365)] = 90,
) -> BacktestReport:
    """Backtest alert thresholds against recorded churn: recall, precision and lead time."""
    bad = [t for t in thresholds if not 0 <= t <= 100]
    if bad:
        raise Unprocessable(f"thresholds must be between 0 and 100; got {bad}")
    start = since or datetime.now(UTC) - timedelta(days=365)
    rows = await backtest(
        session,
        principal.tenant_id,
        thresholds=sorted(set(thresholds)),
        since=start,
        horizon=timedelta(days=horizon_days),
    )
    return BacktestReport.model_validate(
        {"since": start, "horizon_days": horizon_days, "rows": rows}
    )
