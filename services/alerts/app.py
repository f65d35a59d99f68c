"""The alerts API application (port 8003)."""

from __future__ import annotations

from fastapi import FastAPI

from services.alerts.config import AlertsSettings
from services.alerts.endpoints import router
from services.alerts.pages import install as install_pages
from shared.app import create_app as create_service_app


def create_app(settings: AlertsSettings | None = None) -> FastAPI:
    settings = settings or AlertsSettings()
    app = create_service_app(
        service="alerts",
        settings=settings,
        routers=[router],
        description=(
            "Engagement scores per customer and account, churn alerts that explain themselves, "
            "their lifecycle and delivery to webhooks, Slack-compatible hooks and e-mail."
        ),
    )
    install_pages(app, settings)  # /app/alerts (services/alerts/pages)
    return app
