"""The customer-success alert inbox (``/app/alerts``): open alerts by owner and severity, each
alert's explanation, acknowledge / resolve / add a note, and the customer's engagement history.
Reading needs ``alerts:read``, acting ``alerts:write`` (as the API)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.alerts import repository
from services.alerts.pages import inbox
from services.alerts.schemas import AlertStatus
from shared.auth.models import Scope
from shared.errors import Conflict, NotFound
from shared.web.auth import page_requires, page_writes
from shared.web.sessions import WebSession
from shared.web.templating import base_url, render

router = APIRouter(prefix="/app/alerts", include_in_schema=False)
Reader = Annotated[WebSession, Depends(page_requires(Scope.alerts_read))]
Writer = Annotated[WebSession, Depends(page_writes(Scope.alerts_write))]
LIST_LIMIT = 200
HISTORY_POINTS = 90
Note = Annotated[str, Form(max_length=5000)]


def _filters(status: str | None, owner: str | None, severity: str | None) -> dict[str, Any]:
    return {
        "status": status if status in {s.value for s in AlertStatus} else "open",
        "owner": owner or "",
        "severity": severity if severity in inbox.SEVERITIES else "",
    }


async def _list(request: Request, tenant: str, filters: dict[str, Any]) -> dict[str, Any]:
    async with request.app.state.db.session() as session:
        rows = await repository.list_alerts(
            session,
            tenant,
            status=filters["status"],
            owner=filters["owner"] or None,
            rule=None,
            customer_id=None,
            cursor=None,
            limit=LIST_LIMIT,
        )
    for row in rows:
        row["severity"] = inbox.severity(row)
    owners = sorted({r["owner"] for r in rows})
    shown = [r for r in rows if not filters["severity"] or r["severity"] == filters["severity"]]
    return {
        "groups": inbox.by_owner(shown),
        "owners": owners,
        "total": len(shown),
        "truncated": len(rows) >= LIST_LIMIT,
    }


async def _detail(request: Request, tenant: str, alert_id: uuid.UUID) -> dict[str, Any]:
    async with request.app.state.db.session() as session:
        alert = await repository.get_alert(session, tenant, alert_id)
        try:
            engagement: dict[str, Any] | None = await repository.customer_engagement(
                session, tenant, alert["customer_id"], limit=HISTORY_POINTS
            )
        except NotFound:
            engagement = None
    alert["severity"] = inbox.severity(alert)
    explanation = alert["explanation"]
    journey = base_url(request, request.app.state.settings, "journey", "alerts")
    return {
        "alert": alert,
        "bars": inbox.contribution_bars(explanation),
        "bar_width": inbox.BAR_WIDTH,
        "bar_row": inbox.BAR_ROW,
        "chart": inbox.history_chart(
            engagement["history"] if engagement else [], float(alert["threshold"])
        ),
        "engagement": engagement,
        "evidence": explanation.get("recent_events") or [],
        "customer_href": f"{journey}/app/agent/customers/{alert['customer_id']}",
    }


@router.get("")
async def inbox_page(
    request: Request,
    web: Reader,
    status: str | None = None,
    owner: str | None = None,
    severity: str | None = None,
) -> Response:
    """The inbox: alerts grouped by owner, most severe first."""
    filters = _filters(status, owner, severity)
    listing = await _list(request, web.principal.tenant_id, filters)
    return render(request, "alerts.html", {"filters": filters, **listing, "selected": None})


@router.get("/{alert_id}")
async def alert_page(
    alert_id: uuid.UUID,
    request: Request,
    web: Reader,
    status: str | None = None,
    owner: str | None = None,
    severity: str | None = None,
) -> Response:
    """One alert's explanation beside the inbox (only the explanation for htmx)."""
    detail = await _detail(request, web.principal.tenant_id, alert_id)
    if request.headers.get("hx-request"):
        return render(request, "_alert.html", detail)
    filters = _filters(status or detail["alert"]["status"], owner, severity)
    listing = await _list(request, web.principal.tenant_id, filters)
    return render(
        request, "alerts.html", {"filters": filters, **listing, "selected": alert_id, **detail}
    )


async def _act(
    request: Request, web: WebSession, alert_id: uuid.UUID, action: str, note: str
) -> Response:
    tenant = web.principal.tenant_id
    actor = f"key:{web.principal.key_id}"
    message, status_code = None, 200
    try:
        async with request.app.state.db.session() as session:
            if action == "note":
                await repository.add_note(session, tenant, alert_id, actor=actor, note=note)
            else:
                await repository.transition(
                    session, tenant, alert_id, to=action, actor=actor, note=note or None
                )
    except Conflict as exc:
        message, status_code = exc.message, exc.status_code
    if not request.headers.get("hx-request"):
        return RedirectResponse(f"/app/alerts/{alert_id}", status_code=303)
    detail = await _detail(request, tenant, alert_id)
    done = {"acknowledged": "Acknowledged.", "resolved": "Resolved.", "note": "Note added."}
    return render(
        request,
        "_alert.html",
        {**detail, "message": message, "done": None if message else done[action]},
        status_code=status_code,
    )


@router.post("/{alert_id}/ack")
async def acknowledge(
    alert_id: uuid.UUID, request: Request, web: Writer, note: Note = ""
) -> Response:
    return await _act(request, web, alert_id, "acknowledged", note.strip())


@router.post("/{alert_id}/resolve")
async def resolve(alert_id: uuid.UUID, request: Request, web: Writer, note: Note = "") -> Response:
    return await _act(request, web, alert_id, "resolved", note.strip())


@router.post("/{alert_id}/note")
async def add_note(alert_id: uuid.UUID, request: Request, web: Writer, note: Note = "") -> Response:
    if not note.strip():
        detail = await _detail(request, web.principal.tenant_id, alert_id)
        return render(
            request, "_alert.html", {**detail, "message": "Write a note first."}, status_code=422
        )
    return await _act(request, web, alert_id, "note", note.strip())
