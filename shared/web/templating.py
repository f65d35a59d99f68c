"""Jinja2 templates of the pages: the service's own folder first, then the shared one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from shared.config import CommonSettings

SHARED_TEMPLATES = Path(__file__).parent / "templates"

# Which service serves which pages, and its default port (links between them; see links()).
PAGE_HOMES = {"journey": ("/app/agent", 8002), "alerts": ("/app/alerts", 8003)}
NAV = (("Agent", "journey", "/app/agent"), ("Journey map", "journey", "/app/map"),
       ("Alerts", "alerts", "/app/alerts"))  # fmt: skip


def when(value: str | datetime | None) -> str:
    """ISO time → ``2026-11-30 14:05 UTC`` (the pages show UTC, as the API does)."""
    if not value:
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.strftime("%Y-%m-%d %H:%M UTC")


def make_templates(service_templates: Path) -> Jinja2Templates:
    env = Environment(
        loader=ChoiceLoader(
            [FileSystemLoader(str(service_templates)), FileSystemLoader(str(SHARED_TEMPLATES))]
        ),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    return Jinja2Templates(env=env)


def base_url(request: Request, settings: CommonSettings, service: str, own: str) -> str:
    """Where ``service``'s pages live, seen from ``own``'s page: the configured URL, else the
    same host on that service's port shifted as this one is (``waypoint run --port-offset``)."""
    if service in settings.web_service_urls:
        return settings.web_service_urls[service].rstrip("/")
    if service == own or request.url.port is None:
        return ""  # one origin behind a proxy that routes /app/alerts to alerts
    offset = request.url.port - PAGE_HOMES[own][1]
    return f"{request.url.scheme}://{request.url.hostname}:{PAGE_HOMES[service][1] + offset}"


def links(request: Request, own: str) -> list[dict[str, Any]]:
    settings: CommonSettings = request.app.state.settings
    return [
        {
            "label": label,
            "href": base_url(request, settings, service, own) + path,
            "current": request.url.path.startswith(path) and service == own,
        }
        for label, service, path in NAV
    ]


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a page or fragment with what every template may use (session, CSRF, links)."""
    templates: Jinja2Templates = request.app.state.templates
    web = getattr(request.state, "web", None)
    own: str = request.app.state.pages_service
    ctx = {
        "web": web,
        "principal": web.principal if web else None,
        "csrf": web.csrf_token if web else "",
        "nav": links(request, own) if web else [],
        "sign_in_base": base_url(request, request.app.state.settings, own, own),
        **(context or {}),
    }
    response = templates.TemplateResponse(
        request, name, ctx, status_code=status_code, headers=headers
    )
    assert isinstance(response, HTMLResponse)
    return response
