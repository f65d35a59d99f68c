"""One error tree and one renderer: every expected failure is a 4xx ``{"error", "detail"}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class WaypointError(Exception):
    status_code = 500
    error = "internal_error"

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.detail = detail if detail is not None else message
        self.headers: dict[str, str] | None = None


class BadRequest(WaypointError):
    status_code = 400
    error = "bad_request"


class Unauthorized(WaypointError):
    status_code = 401
    error = "unauthorized"

    def __init__(self, message: str = "missing or invalid API key"):
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Bearer realm="waypoint", Basic realm="waypoint"'}


class Forbidden(WaypointError):
    status_code = 403
    error = "forbidden"


class NotFound(WaypointError):
    status_code = 404
    error = "not_found"


class Conflict(WaypointError):
    status_code = 409
    error = "conflict"


class PayloadTooLarge(WaypointError):
    status_code = 413
    error = "payload_too_large"


class Unprocessable(WaypointError):
    status_code = 422
    error = "validation_error"


class TooManyRequests(WaypointError):
    """A rate limit was reached: ``Retry-After`` and the IETF draft's ``RateLimit-*`` headers
    (draft-ietf-httpapi-ratelimit-headers) say which limit and when to come back."""

    status_code = 429
    error = "rate_limited"

    def __init__(self, message: str, *, limit: int, retry_after: int, window: int | None):
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        retry = str(self.retry_after)
        self.headers = {
            "Retry-After": retry,
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": retry,
        }
        if window is not None:  # None: a cap on concurrent use, not a rate
            self.headers["RateLimit-Policy"] = f"{limit};w={window}"


class ServiceUnavailable(WaypointError):
    status_code = 503
    error = "unavailable"


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
}


def install_error_handlers(app: FastAPI) -> None:
    async def waypoint_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, WaypointError)
        return JSONResponse(
            {"error": exc.error, "detail": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(
            {"error": "validation_error", "detail": _clean_errors(list(exc.errors()))},
            status_code=422,
        )

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        """Starlette's own refusals (unknown route, wrong method, body limit) in the same shape."""
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": _HTTP_ERRORS.get(exc.status_code, "http_error"), "detail": exc.detail},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(WaypointError, waypoint_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
