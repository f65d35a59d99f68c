"""The identity API: a customer's identity graph (``context:read``), merge and split by hand
(``admin``, audited). Tenant-scoped; another tenant's id is a 404."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.deps import PoolDep, SettingsDep, command_once, json_response
from services.journey.identity import service
from services.journey.identity.schemas import (
    IdentityGraph,
    MergeRequest,
    MergeResponse,
    SplitRequest,
    SplitResponse,
)
from shared.auth.dependencies import Admin, ContextReader
from shared.deps import DatabaseDep, IdempotencyKeyDep

# Tagged ``context`` like the rest of the agent API it came from (merge and split: ``identity``
# too), so the OpenAPI document is unchanged.
router = APIRouter(prefix="/v1", tags=["context"])


@router.get("/customers/{customer_id}/identities", response_model=IdentityGraph)
async def customer_identities(
    customer_id: uuid.UUID, principal: ContextReader, pool: PoolDep
) -> Response:
    """The identity graph: identifiers with provenance, merges, splits, provisional links."""
    return json_response(await service.identity_graph(pool, principal.tenant_id, customer_id))


@router.post("/customers/merge", response_model=MergeResponse, tags=["identity"])
async def merge_customers(
    body: MergeRequest,
    request: Request,
    principal: Admin,
    db: DatabaseDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Merge two customers by hand (admin; audited; undo with split). Answers once committed;
    with an ``Idempotency-Key``, a retry merges once and gets the same answer."""

    async def command(session: AsyncSession) -> MergeResponse:
        result = await service.manual_merge(
            session,
            settings=settings,
            principal=principal,
            survivor_id=body.survivor_id,
            merged_id=body.merged_id,
            reason=body.reason,
        )
        return MergeResponse(
            merge_id=result.merge_id,
            survivor_id=str(result.survivor_id),
            merged_id=str(result.merged_id),
            version=result.version,
        )

    return await command_once(
        request, db, settings, principal, idempotency_key, body.model_dump(mode="json"), command
    )


@router.post("/customers/{customer_id}/split", response_model=SplitResponse, tags=["identity"])
async def split_customer(
    customer_id: uuid.UUID,
    request: Request,
    principal: Admin,
    db: DatabaseDep,
    settings: SettingsDep,
    body: SplitRequest | None = None,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Undo a merge (admin; audited): both customers as they were, later events on their side.
    Answers once committed; an ``Idempotency-Key`` makes a retry split once."""
    split = body or SplitRequest()

    async def command(session: AsyncSession) -> SplitResponse:
        result = await service.split_customer(
            session,
            settings=settings,
            principal=principal,
            customer_id=customer_id,
            merge_id=split.merge_id,
            reason=split.reason,
        )
        return SplitResponse(
            merge_id=result.merge_id,
            customer_id=str(result.customer_id),
            restored_id=str(result.restored_id),
            moved_events=len(result.moved_events),
            moved_identifiers=result.moved_identifiers,
        )

    return await command_once(
        request, db, settings, principal, idempotency_key, split.model_dump(mode="json"), command
    )
