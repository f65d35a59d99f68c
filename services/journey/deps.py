"""Request dependencies and the JSON response shared by the journey API's endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.journey.config import JourneySettings
from shared import faults, idempotency
from shared.auth.service import Principal
from shared.db import Database
from shared.deps import run_idempotent


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pg_pool
    return pool


async def _settings(request: Request) -> JourneySettings:
    settings: JourneySettings = request.app.state.settings
    return settings


PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
SettingsDep = Annotated[JourneySettings, Depends(_settings)]


def json_response(body: dict[str, Any]) -> Response:
    """Serialize once with orjson; the declared models document the shape (no re-validation)."""
    return Response(orjson.dumps(body), media_type="application/json")


async def command_once(
    request: Request,
    db: Database,
    settings: JourneySettings,
    principal: Principal,
    key: str | None,
    body: Any,
    command: Callable[[AsyncSession], Awaitable[Any]],
    *,
    status_code: int = 200,
) -> JSONResponse:
    """Run a write command in one transaction, answered once committed, at most once per
    ``Idempotency-Key`` of the tenant (``shared/idempotency.py``)."""
    response = await run_idempotent(
        db,
        schema="journey",
        tenant_id=principal.tenant_id,
        key=key,
        request_hash=idempotency.fingerprint(request.method, request.url.path, body),
        retention=timedelta(hours=settings.idempotency_key_hours),
        status_code=status_code,
        command=command,
    )
    faults.crash_point("journey-api", "after_commit")  # the fault suite's: committed, unanswered
    return response
