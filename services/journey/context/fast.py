"""The screen pop's hot path without FastAPI's per-request layers.

Measured in-process (``bench/screen_pop_cpu.py``): of the CPU a cached screen pop cost, FastAPI's
dependency and parameter resolution was about 40 %, more than the look-up and the card together.
FastAPI's route stays declared (OpenAPI, other methods, the metrics label), and an ordinary
request (``identifier_type`` and ``value`` once each, nothing else) is served here: the same
key verification, scope check and rate limits (``shared.auth.dependencies.requires``), then
the very function FastAPI's handler calls (``endpoints.screen_pop``: normalization, cache,
masked card). Anything else (a missing, repeated, too long or unknown parameter,
``reveal_sensitive``) goes to FastAPI's handler unchanged, so every refusal is FastAPI's own.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from services.journey.context.endpoints import screen_pop
from shared.auth.dependencies import requires
from shared.auth.models import Scope as AuthScope

PATH = "/v1/context"
_PARAMS = ("identifier_type", "value")
_VALUE_MAX = 320  # as the FastAPI route's Query(max_length=320)
_reader = requires(AuthScope.context_read)


def _ordinary(query: bytes) -> tuple[str, str] | None:
    """(identifier_type, value) when the query is exactly those two, once each, valid."""
    # Decoded exactly as Starlette's QueryParams decodes them.
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    if len(pairs) != 2 or {name for name, _ in pairs} != set(_PARAMS):
        return None
    got = dict(pairs)
    value = got["value"]
    if not 1 <= len(value) <= _VALUE_MAX:
        return None
    return got["identifier_type"], value


_FALLBACK = "waypoint.screen_pop.fallback"


class ScreenPopRoute(Route):
    """Matched before FastAPI's route, for GET only (every other method gets FastAPI's own
    answer); a request it hands back is routed again, past it, to FastAPI's handler."""

    def __init__(self) -> None:
        super().__init__(PATH, self._serve, include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_FALLBACK) or scope.get("method") != "GET":
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is Match.FULL:
            child["route"] = self  # the metrics label: the same template as FastAPI's route
        return match, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = _ordinary(scope.get("query_string", b""))
        if params is None:
            scope[_FALLBACK] = True
            await scope["app"].router(scope, receive, send)
            return
        request = Request(scope, receive)
        principal = await _reader(request)
        response = await screen_pop(request, principal, params[0], params[1], False)
        await response(scope, receive, send)

    @staticmethod
    async def _serve(_request: Request) -> None:  # never called: ``handle`` serves
        raise NotImplementedError


def install(app: FastAPI) -> None:
    """Put the fast route in front of FastAPI's ``GET /v1/context`` (which stays declared)."""
    app.router.routes.insert(0, ScreenPopRoute())
