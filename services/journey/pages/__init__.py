"""The journey service's pages: the agent desktop (``/app/agent``) and the journey map
(``/app/map``). Shared machinery (sessions, CSRF, CSP, templates) is in ``shared/web``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI

from services.journey.config import JourneySettings
from services.journey.pages import endpoints, maps
from shared.web import install_pages

HERE = Path(__file__).parent


def install(app: FastAPI, settings: JourneySettings) -> None:
    router = APIRouter()
    router.include_router(endpoints.router)
    router.include_router(maps.router)
    install_pages(
        app,
        service="journey",
        settings=settings,
        router=router,
        templates=HERE / "templates",
        static=HERE / "static",
        home="/app/agent",
    )
