"""Pagination cursors: the time and id inside a page's ``next_cursor``, read back under the rule
of a time in a query (``shared.guards.UtcDateTime``); a cursor the API did not return is a 422.
No HTTP stack here: repositories that page use these, and the ingest worker imports one."""

from __future__ import annotations

from datetime import datetime

from shared.errors import Unprocessable
from shared.events.payloads import to_utc


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
    if not isinstance(value, str | int) or "\x00" in str(value):
        raise invalid_cursor("the cursor holds no usable id")
    return str(value)
