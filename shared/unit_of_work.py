"""A command's transaction: ``unit_of_work`` commits at the end of its block, and a refusal by
the database (at any statement or at COMMIT) becomes the client's 409 / 503 (``database_error``;
anything else is a bug, a 500). No FastAPI here: the HTTP dependencies (``shared/deps.py``) and
the processes that run commands without a request (the journey privacy worker) share it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database
from shared.errors import Conflict, ServiceUnavailable, WaypointError


def database_error(exc: DBAPIError | asyncpg.PostgresError) -> WaypointError | None:
    """What to tell the client when the database refused a request's work (None: a bug, 500)."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = str(getattr(cause, "sqlstate", None) or "")
    if sqlstate in {"40001", "40P01"}:  # serialization failure, deadlock
        return Conflict("the change conflicted with a concurrent one and was not saved; retry")
    if sqlstate.startswith("23"):  # integrity constraint violation (also deferred, at commit)
        return Conflict(f"the change conflicts with stored data and was not saved: {cause}")
    lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
    if lost or sqlstate.startswith(("08", "57P")):
        return ServiceUnavailable("the database is unavailable; nothing was saved, retry")
    return None


@asynccontextmanager
async def unit_of_work(db: Database) -> AsyncIterator[AsyncSession]:
    """``db.session()`` for a request: commit at the end of the block, and a refusal by the
    database (at any statement or at COMMIT) becomes the client's 409 / 503 (else a 500)."""
    try:
        async with db.session() as session:
            yield session
    except (DBAPIError, asyncpg.PostgresError) as exc:
        error = database_error(exc)
        if error is None:
            raise
        raise error from exc
