"""The app ``bench/ratelimit.py`` serves: the shared app factory (middleware, auth, limits) with
one authenticated route that does no work, so what is measured is the per-request cost."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from shared.app import create_app
from shared.auth.dependencies import PrincipalDep
from shared.config import CommonSettings

router = APIRouter()


@router.get("/v1/ping")
async def ping(principal: PrincipalDep) -> dict[str, str]:
    return {"tenant": principal.tenant_id}


def create() -> FastAPI:
    return create_app(
        service="bench", settings=CommonSettings(), routers=[router], description="bench"
    )
