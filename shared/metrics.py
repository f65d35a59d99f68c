"""HTTP metrics for every service (route template, never the raw path) and ``/metrics``."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "waypoint_http_requests_total",
    "HTTP requests handled, by route template, method and status code.",
    ["service", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "waypoint_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead); streams are counted when their headers go out."""

    def __init__(self, app: ASGIApp, service: str):
        self.app = app
        self.service = service
        # Children bound once per (route, method, status): ``labels()`` takes a lock and
        # builds its key on every call. Bounded: methods come from clients.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            children = self._children.get((template, method, str(status)))
            if children is None:
                children = self._bind(template, method, str(status))
            children[0].inc()
            children[1].observe(time.perf_counter() - start)

    def _bind(self, template: str, method: str, status: str) -> tuple[Any, Any]:
        if len(self._children) >= 10_000:
            self._children.clear()
        children = (
            HTTP_REQUESTS.labels(self.service, template, method, status),
            HTTP_LATENCY.labels(self.service, template, method),
        )
        self._children[template, method, status] = children
        return children


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
