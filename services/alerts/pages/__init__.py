"""The alerts service's pages: the customer-success alert inbox (``/app/alerts``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.alerts.config import AlertsSettings
from services.alerts.pages.endpoints import router
from shared.web import install_pages

HERE = Path(__file__).parent


def install(app: FastAPI, settings: AlertsSettings) -> None:
    install_pages(
        app,
        service="alerts",
        settings=settings,
        router=router,
        templates=HERE / "templates",
        static=None,  # the inbox needs only the shared files
        home="/app/alerts",
    )
