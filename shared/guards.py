"""Request guards every service gets from ``create_app``: input that PostgreSQL cannot store (a
NUL character) or Python cannot convert (a time that leaves the calendar once moved to UTC) is
a 422 naming the parameter, decided here once instead of in every route.

- ``RequestGuard`` (ASGI middleware, before routing, auth and the database): a NUL in a path
  parameter, a query value (raw or percent-encoded) or the JSON body of a route whose body
  FastAPI parses is a 422, and so is a query value or path over ``MAX_PARAMETER_CHARS``; a body
  over the limit is a 413, declared or streamed; headers over ``MAX_HEADER_BYTES`` are a 431.
  A GET costs a sum and two substring tests; the route table is consulted only for a write or
  a NUL in the path. Ingest's event routes read their own bodies and refuse such events one by one
  (``services/ingest/service.py``), so a batch keeps its good events.
- ``UtcDateTime``: the type of every time in a query (``shared/cursors.py`` applies its rule to
  the time inside a cursor); an out-of-range time is a 422, not an ``OverflowError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi.routing import iter_route_contexts
from pydantic import AfterValidator, BeforeValidator
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.error_handlers import error_body
from shared.events import has_nul
from shared.events.payloads import to_utc

__all__ = [
    "MAX_HEADER_BYTES",
    "BodyTooLarge",
    "IsoDate",
    "RequestGuard",
    "UtcDateTime",
    "to_utc",
]

NUL = "\x00"
NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
_WRITES = frozenset({"POST", "PUT", "PATCH"})
# Longest query value or path: ids, cursors and identifiers are far shorter; a longer one is
# abuse (JSON bodies have their own per-field limits and the body limit).
MAX_PARAMETER_CHARS = 2048
# All request headers together (names and values): browsers and proxies send far less (nginx's
# default buffers hold 32 kB); past it a request is refused with 431 before anything reads it.
MAX_HEADER_BYTES = 32 * 1024

Loc = tuple[str | int, ...]


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


def _problem(*loc: str | int) -> dict[str, str]:
    """One item of a 422's ``detail``, in the shape ``shared.error_handlers`` gives validation
    errors."""
    return {
        "loc": ".".join(str(part) for part in loc),
        "message": f"{loc[-1]} {NUL_MESSAGE}",
        "type": "nul_char",
    }


def _too_long(*loc: str | int) -> dict[str, str]:
    return {
        "loc": ".".join(str(part) for part in loc),
        "message": f"{loc[-1]} is longer than {MAX_PARAMETER_CHARS} characters (the limit)",
        "type": "string_too_long",
    }


def _body_problem(body: bytes) -> dict[str, str]:
    try:
        loc = _first_nul(orjson.loads(body), ("body",)) or ("body",)
    except orjson.JSONDecodeError:
        loc = ("body",)
    return _problem(*loc)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` as a body streams past the limit into an endpoint that reads it
    itself; an ``HTTPException``, so the error handlers render it as a 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


@dataclass(frozen=True, slots=True)
class _Route:
    regex: re.Pattern[str]
    methods: frozenset[str]
    parses_body: bool  # FastAPI parses a JSON body for it (ingest's routes read their own)
    original: Any  # the route itself (its error body may carry more, see shared.error_handlers)


def _route_table(app: Any) -> list[_Route]:
    table = []
    for context in iter_route_contexts(getattr(app, "routes", [])):
        regex = getattr(context, "path_regex", None)
        if regex is not None:
            parses = getattr(context.original_route, "body_field", None) is not None
            methods = frozenset(context.methods or ())
            table.append(_Route(regex, methods, parses, context.original_route))
    return table


class RequestGuard:
    """422 for a NUL in the path, the query or a parsed JSON body; 413 for a body over
    ``max_body_bytes``. Both before routing, auth or the database."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._routes: list[_Route] | None = None

    def _match(self, scope: Scope) -> tuple[_Route | None, dict[str, str] | None]:
        """The route of the request (method too), and the path's parameters by name (None: no
        route serves this path)."""
        if self._routes is None:  # routes are all included before the first request
            self._routes = _route_table(scope.get("app"))
        path, method = scope.get("path", ""), scope.get("method", "GET")
        params: dict[str, str] | None = None
        for route in self._routes:
            found = route.regex.match(path)
            if found is not None:
                if params is None:
                    params = found.groupdict()
                if method in route.methods:
                    return route, found.groupdict()
        return None, params

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
        if header_bytes > MAX_HEADER_BYTES:
            detail = f"request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
            await _respond(scope, receive, send, 431, "headers_too_large", detail)
            return
        problems: list[dict[str, str]] = []
        query: bytes = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="replace")
            problems += [
                _problem("query", name.replace(NUL, "?"))
                for name, value in pairs
                if NUL in name or NUL in value
            ]
        if len(query) > MAX_PARAMETER_CHARS:  # then some value may be too long (rare)
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="replace")
            problems += [
                _too_long("query", name[:64])
                for name, value in pairs
                if len(value) > MAX_PARAMETER_CHARS or len(name) > MAX_PARAMETER_CHARS
            ]
        if len(scope.get("path", "")) > MAX_PARAMETER_CHARS:
            problems.append(_too_long("path"))
        route = None
        writes = scope.get("method") in _WRITES
        if writes or NUL in scope.get("path", "") or problems:
            route, params = self._match(scope)
            if route is None and params is not None and problems:  # a method it does not serve
                await self.app(scope, receive, send)  # routing answers 405
                return
            found = (params or {}).items()
            problems = [_problem("path", k) for k, v in found if NUL in v] + problems
        if problems:
            await _respond(scope, receive, send, 422, "validation_error", problems, route)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            too_large = _too_large(limit)
            await _respond(scope, receive, send, 413, "payload_too_large", too_large, route)
            return
        if route is not None and route.parses_body:
            await self._parsed_body(scope, receive, send)
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

    async def _parsed_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body FastAPI is about to read anyway, check it, then hand it on."""
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _respond(scope, receive, send, 413, "payload_too_large", _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if has_nul(body):
            detail = [_body_problem(body)]
            await _respond(scope, receive, send, 422, "validation_error", detail)
            return
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _too_large(limit: int) -> str:
    return str(BodyTooLarge(limit).detail)


async def _respond(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    error: str,
    detail: Any,
    route: _Route | None = None,
) -> None:
    body = error_body(scope, error, detail, route=route.original if route else None)
    await JSONResponse(body, status_code=status)(scope, receive, send)


# RFC 3339 date-time, what OpenAPI's ``format: date-time`` promises: a date, a time, an offset
# (without one, UTC: the events' own rule).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})?", re.ASCII
)


def _rfc3339(value: object) -> object:
    """A time in a request parameter is an RFC 3339 string; pydantic alone would also take
    ``0.5`` (seconds since 1970)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 date-time, such as 2026-11-30T08:00:00Z")
    return datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))


# The type of every time in a query: strict RFC 3339, then aware UTC; an out-of-range time
# (0001-01-01T00:00:00+14:00 is in year 0 in UTC) is a 422, not an OverflowError.
UtcDateTime = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(to_utc)]


def _iso_date(value: object) -> object:
    """A date in a request parameter is YYYY-MM-DD (pydantic alone would take ``0``)."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or re.fullmatch(r"\d{4}-\d{2}-\d{2}", value, re.ASCII) is None:
        raise ValueError("must be a date as YYYY-MM-DD, such as 2026-11-30")
    return date.fromisoformat(value)


# The type of every calendar date in a query.
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
