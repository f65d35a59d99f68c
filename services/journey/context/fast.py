"""The screen pop's hot path without FastAPI's per-request layers.

Measured in-process (``bench/screen_pop_cpu.py``): of the CPU a cached screen pop cost, FastAPI's
dependency and parameter resolution was about 40 %, more than the look-up and the card together.
FastAPI's route stays declared (OpenAPI, other methods, the metrics label), and an ordinary
request (``identifier_type`` and ``value`` once each, nothing else) is served here: the same
key verification, scope check and rate limits (``shared.auth.dependencies.requires``), then
the very function FastAPI's handler calls for a masked card (``endpoints.masked_screen_pop``:
normalization, cache, masking). Anything else (a missing, repeated, too long or unknown
parameter, ``reveal_sensitive``) goes to FastAPI's handler unchanged, so every refusal is
FastAPI's own.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from services.journey.context.endpoints import masked_screen_pop
from shared.auth.dependencies import requires
from shared.auth.models import Scope as AuthScope

PATH = "/v1/context"
_PARAMS = ("identifier_type", "value")
_VALUE_MAX = 320  # as the FastAPI route's Query(max_length=320)
_reader = requires(AuthScope.context_read)
_FALLBACK = "waypoint.screen_pop.fallback"
_JSON = b"application/json"


def _pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)`` (how Starlette's QueryParams decode a
    query), without its per-call argument coercion: the same split, ``+`` and unquoting."""
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def _ordinary(query: bytes) -> tuple[str, str] | None:
    """(identifier_type, value) when the query is exactly those two, once each, valid."""
    pairs = _pairs(query.decode("latin-1"))
    if len(pairs) != 2:
        return None
    (first, a), (second, b) = pairs
    if (first, second) == _PARAMS:
        id_type, value = a, b
    elif (second, first) == _PARAMS:
        id_type, value = b, a
    else:
        return None
    if not 1 <= len(value) <= _VALUE_MAX:
        return None
    return id_type, value


class ScreenPopRoute(BaseRoute):
    """A route that matches ``GET /v1/context`` only, placed before FastAPI's route: every other
    method, and every request it hands back, is routed on to FastAPI's. Not in the OpenAPI
    document (FastAPI's route documents the endpoint) and not addressable by name."""

    path = PATH  # the metrics label (``scope["route"].path``): the same template as FastAPI's
    include_in_schema = False

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if (
            scope["type"] == "http"
            and scope.get("method") == "GET"
            and _FALLBACK not in scope
            and get_route_path(scope) == PATH
        ):
            return Match.FULL, {"route": self}  # FastAPI's router does not set it itself
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = _ordinary(scope.get("query_string", b""))
        if params is None:  # routed again, past this route, to FastAPI's handler
            scope[_FALLBACK] = True
            await scope["app"].router(scope, receive, send)
            return
        principal = await _reader(Request(scope, receive))
        body = await masked_screen_pop(scope["app"].state, principal, *params)
        # What ``Response(body, media_type="application/json")`` sends, without building one.
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    """Put the fast route in front of FastAPI's ``GET /v1/context`` (which stays declared)."""
    app.router.routes.insert(0, ScreenPopRoute())
