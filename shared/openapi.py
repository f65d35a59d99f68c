"""Every service's OpenAPI document completed from its route table, so no route can forget it:

- the security schemes (Bearer, ``X-API-Key``, and HTTP Basic on the Segment routes) and, per
  operation, the scopes it needs (``security``, ``x-required-scopes`` and its description);
- the one error body (``shared.error_handlers.ErrorBody``) with an example on every 4xx an operation
  can answer: 401, 403 and 429 when it needs a key, 404 when its path names a resource, 422
  when it takes parameters or a body, and whatever it declares itself;
- unknown query parameters are refused (``reject_unknown_query``), so the document's list of
  parameters is the whole truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from shared.auth.dependencies import SAFE_METHODS, route_scopes
from shared.auth.models import Scope
from shared.error_handlers import ErrorBody, SegmentErrorBody, segment_errors
from shared.errors import Unprocessable

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>` (`waypoint keys create`).",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key in the `X-API-Key` header.",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "Segment / RudderStack SDKs: the API key as the user name (write key), "
        "empty password. Only on the Segment routes.",
    },
}

_EXAMPLES: dict[int, tuple[str, str, Any]] = {
    400: ("bad request", "bad_request", "body is not valid JSON"),
    401: ("no, unknown, revoked or expired API key", "unauthorized", "missing or invalid API key"),
    403: ("the key lacks the scope, or the resource is another tenant's", "forbidden",
          "this key lacks the scope events:write"),
    404: ("no such resource in the key's tenant", "not_found", "no such resource"),
    409: ("conflicts with stored data", "conflict", "the change conflicts with stored data"),
    413: ("body too large", "payload_too_large", "request body exceeds the limit of 1048576 bytes"),
    415: ("unsupported content type or encoding", "unsupported_media_type",
          "content-type 'text/xml': send application/json"),
    422: ("invalid parameters or body; detail names each", "validation_error",
          [{"loc": "query.limit", "message": "Input should be less than or equal to 500",
            "type": "less_than_equal"}]),
    429: ("a rate limit was reached: Retry-After and RateLimit-* headers say when to come back",
          "rate_limited", "rate limit of 600 reads per 60 s reached for this key"),
}  # fmt: skip


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _walk(sub)


def required_scopes(route: APIRoute, method: str) -> tuple[Scope, ...] | None:
    """The scopes ``route`` needs on ``method`` (None: no key at all; (): any valid key)."""
    found: tuple[Scope, ...] | None = None
    for sub in _walk(route.dependant):
        scopes = route_scopes(sub.call, method)
        if scopes is not None:
            found = (*(found or ()), *scopes)
    return found


def declared_query(route: APIRoute) -> frozenset[str]:
    names = {p.alias for p in route.dependant.query_params}
    for sub in _walk(route.dependant):
        names.update(p.alias for p in sub.query_params)
    return frozenset(names)


def _error_content(schema: str, example: Any) -> dict[str, Any]:
    return {
        "application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"},
            "example": example,
        }
    }


def _document_errors(op: dict[str, Any], statuses: set[int], segment: bool) -> None:
    responses = op.setdefault("responses", {})
    declared = {int(code) for code in responses if code.isdigit() and 400 <= int(code) < 500}
    for status in sorted(statuses | declared):
        description, error, detail = _EXAMPLES.get(status, ("refused", "http_error", "refused"))
        example: dict[str, Any] = {"error": error, "detail": detail}
        if segment:
            example |= {"code": error, "message": detail if isinstance(detail, str) else error}
        entry = responses.setdefault(str(status), {"description": description})
        entry["content"] = _error_content("SegmentErrorBody" if segment else "ErrorBody", example)


def complete(spec: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    components = spec.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    template = "#/components/schemas/{model}"
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template=template)
    schemas["SegmentErrorBody"] = SegmentErrorBody.model_json_schema(ref_template=template)
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        path = context.path_format or route.path_format
        for method in context.methods or ():
            op = spec["paths"].get(path, {}).get(method.lower())
            if op is None:
                continue
            scopes = required_scopes(route, method)
            segment = segment_errors(route)
            statuses: set[int] = set()
            if op.get("parameters") or "requestBody" in op:
                statuses |= {400, 422}  # 400: a body that is not JSON, a value that is no id
            if "{" in path or "requestBody" in op:
                statuses.add(404)  # a resource named in the path or the body
            if method.upper() not in SAFE_METHODS:
                statuses.add(409)  # a conflict with a concurrent change
            if scopes is None:
                op["security"] = []
            else:
                names = [s.value for s in scopes]
                schemes = ["bearer", "apiKey", *(["basic"] if segment else [])]
                op["security"] = [{scheme: names} for scheme in schemes]
                op["x-required-scopes"] = names
                needs = " or ".join(f"`{n}`" for n in names) if names else "any valid key"
                admin = " (or `admin`)" if names else ""
                op["description"] = (
                    f"{op.get('description', '').rstrip()}\n\n**Scope:** {needs}{admin}."
                ).lstrip()
                statuses |= {401, 403, 429}
            _document_errors(op, statuses, segment)
    text = repr(spec["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f"/{unused}'" not in text:
            del schemas[unused]
    return spec


def install(app: FastAPI) -> None:
    """Complete ``app``'s OpenAPI document (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(FastAPI.openapi(app), app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Families of parameters a route reads itself and checks itself: the journey map's
# ``segment.<trait>`` filters (services/journey/maps/schemas.py refuses unknown ones).
OPEN_QUERY_PREFIXES = ("segment.",)


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the route does not declare is a 422 naming it (a misspelt filter
    would otherwise be ignored, and a client would read an unfiltered answer as filtered)."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return  # the HTML pages take what their forms send
    known = declared_query(route)  # microseconds, and only for a request with a query
    unknown = sorted(
        {
            name
            for name in request.query_params
            if name not in known and not name.startswith(OPEN_QUERY_PREFIXES)
        }
    )
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        detail = [
            {
                "loc": f"query.{name[:64]}",
                "message": f"unknown query parameter {name[:64]!r}; this route takes: {takes}",
                "type": "unknown_parameter",
            }
            for name in unknown
        ]
        raise Unprocessable(f"unknown query parameters: {', '.join(unknown)}", detail=detail)
