"""Request dependencies and the JSON response shared by the journey API's endpoints."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import Depends, Request
from fastapi.responses import Response

from services.journey.config import JourneySettings


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
