"""Request guards every service gets from ``create_app``: input that PostgreSQL cannot store (a
NUL character) or Python cannot convert (a time that leaves the calendar once moved to UTC) is
a 422 naming the parameter, decided here once instead of in every route.

- ``refuse_nul`` (an app-wide dependency, the first one every route solves): NUL in a path
  parameter, a query value (raw or percent-encoded) or the JSON body of a route whose body
  FastAPI parses. Each costs a substring test on bytes already in hand; ingest's event routes
  read their own bodies and refuse such events one by one (``services/ingest/service.py``), so
  a batch keeps its good events.
- ``BodyLimit`` (ASGI middleware): every request body is bounded (413), declared or streamed.
- ``UtcDateTime``: the type of every time in a query (and ``cursor_time`` its rule for the time
  inside a cursor); an out-of-range time is a 422, not an ``OverflowError``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import Unprocessable
from shared.events.payloads import UtcDateTime, to_utc

__all__ = [
    "BodyLimit",
    "BodyTooLarge",
    "UtcDateTime",
    "cursor_key",
    "cursor_time",
    "has_nul",
    "invalid_cursor",
    "refuse_nul",
    "to_utc",
]

NUL = "\x00"
NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")  # not an escaped backslash + "u0000"

Loc = tuple[str | int, ...]


def has_nul(payload: bytes) -> bool:
    """True when JSON text holds a U+0000 character (the cheap tests first: it is rare)."""
    if b"\x00" in payload:
        return True
    return b"\\u0000" in payload and _NUL_ESCAPE.search(payload) is not None


def _first_nul(value: Any, loc: Loc) -> Loc | None:
    if isinstance(value, str):
        return loc if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                return (*loc, key.replace(NUL, "?"))
            found = _first_nul(item, (*loc, key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_nul(item, (*loc, index))
            if found is not None:
                return found
    return None


def _error(loc: Loc) -> dict[str, Any]:
    return {"type": "nul_char", "loc": loc, "msg": f"{loc[-1]} {NUL_MESSAGE}", "input": None}


async def refuse_nul(request: Request) -> None:
    """App-wide dependency: no NUL in the path parameters, the query or a parsed JSON body."""
    errors = [_error(("path", k)) for k, v in request.path_params.items() if NUL in str(v)]
    query: bytes = request.scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in request.query_params.multi_items():
            if NUL in name or NUL in value:
                errors.append(_error(("query", name.replace(NUL, "?"))))
    if getattr(request.scope.get("route"), "body_field", None) is not None:
        body = await request.body()  # FastAPI read (and cached) it before its dependencies
        if has_nul(body):
            try:
                loc = _first_nul(orjson.loads(body), ("body",)) or ("body",)
            except orjson.JSONDecodeError:
                loc = ("body",)
            errors.append(_error(loc))
    if errors:
        raise RequestValidationError(errors)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` as the body streams in; an ``HTTPException`` so that FastAPI's
    body reading passes it on (it turns other errors into a 400) to the error handlers."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimit:
    """413 for a request body over ``max_body_bytes``: at once when declared, else as soon as
    the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            body = {"error": "payload_too_large", "detail": BodyTooLarge(limit).detail}
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def invalid_cursor(message: str = "not a cursor this API returned") -> Unprocessable:
    """The 422 of a ``cursor`` query value that cannot be decoded."""
    problem = {"loc": "query.cursor", "message": message, "type": "value_error"}
    return Unprocessable(
        f"cursor: {message}; pass next_cursor from the previous page", detail=[problem]
    )


def cursor_time(value: object) -> datetime:
    """The time inside a cursor, aware UTC (``UtcDateTime``'s rule), or ``invalid_cursor``."""
    try:
        if not isinstance(value, str):
            raise ValueError("the cursor holds no time")
        return to_utc(datetime.fromisoformat(value))
    except ValueError as exc:
        raise invalid_cursor(str(exc)) from None


def cursor_key(value: object) -> str:
    """The id inside a cursor (the tie-breaker after its time), or ``invalid_cursor``."""
    if not isinstance(value, str | int) or NUL in str(value):
        raise invalid_cursor("the cursor holds no usable id")
    return str(value)
