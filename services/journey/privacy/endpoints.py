"""Erasure API: request a customer's erasure in every service, and read its receipt."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from services.journey.deps import SettingsDep
from services.journey.privacy import service
from services.journey.privacy.schemas import ErasureCreate, ErasurePublic
from shared.auth.dependencies import requires
from shared.auth.models import Scope
from shared.auth.service import Principal
from shared.deps import DatabaseDep
from shared.privacy import reveal

router = APIRouter(prefix="/v1", tags=["privacy"])
Eraser = Annotated[Principal, Depends(requires(Scope.privacy_erase))]


@router.post("/customers/{customer_id}/erase", status_code=202, response_model=ErasurePublic)
async def erase_customer(
    customer_id: uuid.UUID,
    request: Request,
    principal: Eraser,
    db: DatabaseDep,
    settings: SettingsDep,
    body: ErasureCreate | None = None,
) -> dict[str, Any]:
    """Erase a customer (and every customer merged into it) in every service: events, dead
    letters, identities, context, map contributions, scores, alerts, deliveries. Returns the
    receipt; later and replayed events of its identifiers are dropped. Audited."""
    return await service.request_erasure(
        db=db,
        settings=settings,
        keyring=reveal.keyring(request.app.state),
        principal=principal,
        customer_id=customer_id,
        reference=body.reference if body else None,
    )


@router.get("/erasures/{erasure_id}", response_model=ErasurePublic)
async def get_erasure(erasure_id: uuid.UUID, principal: Eraser, db: DatabaseDep) -> dict[str, Any]:
    """An erasure's receipt: each service's status, completion time and counts."""
    return await service.receipt(db, principal.tenant_id, erasure_id)
