"""The one renderer of errors: every ``WaypointError`` (``shared/errors.py``), validation error
and Starlette refusal becomes a ``{"error", "detail"}`` response with its status code."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import Scope

from shared.errors import WaypointError

# Set in a route's ``openapi_extra`` when its clients are Segment-style SDKs (Segment's and
# RudderStack's): they read ``code`` and ``message`` from an error body (and fail with a
# KeyError without them), so those routes' error bodies carry both besides the usual two.
SEGMENT_ERRORS = "x-segment-error-body"


class ErrorBody(BaseModel):
    """Every error response of every service."""

    error: str = Field(description="A fixed code: validation_error, not_found, forbidden …")
    detail: Any = Field(
        description="What was wrong: a sentence, a list of {loc, message, type} (validation), "
        "or per-item results (ingest)."
    )


class SegmentErrorBody(ErrorBody):
    """The error body of the Segment-compatible routes: also ``code`` and ``message``."""

    code: str = Field(description="The same as error (what Segment SDKs read).")
    message: str = Field(description="One line saying what was wrong (what Segment SDKs read).")


def segment_errors(route: object) -> bool:
    extra = getattr(route, "openapi_extra", None)
    return bool(extra and extra.get(SEGMENT_ERRORS))


def _summary(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        where = first.get("loc")
        text = str(first.get("message") or first.get("reason") or first)
        return f"{where}: {text}" if where else text
    return str(detail)


def error_body(
    scope: Scope, error: str, detail: Any, message: str | None = None, route: object = None
) -> dict[str, Any]:
    """``{"error", "detail"}``; on a Segment-compatible route also ``code`` and ``message``."""
    body: dict[str, Any] = {"error": error, "detail": detail}
    if segment_errors(route if route is not None else scope.get("route")):
        body["code"] = error
        body["message"] = message or _summary(detail)
    return body


OVERLOADED = Counter(
    "waypoint_http_overloaded_total",
    "Requests answered 503 because no database connection freed up within the pool's wait.",
    ["app"],
)
OVERLOAD_RETRY_AFTER_SECONDS = 2


def _clean_errors(errors: list[Any]) -> list[dict[str, Any]]:
    cleaned = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        cleaned.append({"loc": loc, "message": e.get("msg", ""), "type": e.get("type", "")})
    return cleaned


_HTTP_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
}


def _allowed(request: Request) -> str:
    """Every method some route of the app serves at this path (for a 405's ``Allow``)."""
    from fastapi.routing import iter_route_contexts

    path = request.scope.get("path", "")
    methods: set[str] = set()
    for context in iter_route_contexts(request.app.routes):
        regex = getattr(context, "path_regex", None)
        if regex is not None and regex.match(path):
            methods.update(context.methods or ())
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    async def waypoint_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, WaypointError)
        return JSONResponse(
            error_body(request.scope, exc.error, exc.detail, exc.message),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = _clean_errors(list(exc.errors()))
        return JSONResponse(
            error_body(request.scope, "validation_error", detail),
            status_code=422,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        """Starlette's own refusals (unknown route, wrong method, body limit) in the same shape."""
        assert isinstance(exc, HTTPException)
        error = _HTTP_ERRORS.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names only the first route's methods
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return JSONResponse(
            error_body(request.scope, error, exc.detail),
            status_code=exc.status_code,
            headers=headers,
        )

    async def overloaded(request: Request, _exc: Exception) -> JSONResponse:
        """Every database connection of this process stayed busy for the pool's whole wait: the
        process is over its capacity. A 503 the client retries, not a 500: nothing was done."""
        OVERLOADED.labels(request.app.title).inc()
        return JSONResponse(
            error_body(
                request.scope,
                "overloaded",
                "every database connection is busy; retry after the time in Retry-After",
            ),
            status_code=503,
            headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_SECONDS)},
        )

    app.add_exception_handler(WaypointError, waypoint_error)
    app.add_exception_handler(PoolTimeout, overloaded)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
