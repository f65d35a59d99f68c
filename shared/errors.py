"""One error tree: every expected failure is a ``WaypointError`` carrying its status code.

Plain exceptions, raised by services, repositories and workers alike; ``shared/error_handlers.py``
renders them as ``{"error", "detail"}`` responses. Kept apart so that a worker, which raises
them too, does not import FastAPI.
"""

from __future__ import annotations

from typing import Any


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
