"""Request dependencies shared by every service's endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from shared import idempotency
from shared.db import Database, raw_connection
from shared.unit_of_work import unit_of_work


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the endpoint returns, rolled back if it
    raises. ``SessionDep`` runs this in function scope, so the commit happens before the
    response is sent and a failed commit is the response (409 / 503 / 500), never a 2xx."""
    async with unit_of_work(request.app.state.db) as session:
        yield session


async def get_producer(request: Request) -> AIOKafkaProducer:
    producer: AIOKafkaProducer = request.app.state.producer
    return producer


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


# scope="function": FastAPI closes the dependency when the endpoint returns, before sending the
# response (the default, "request", closes it after the response is sent).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ProducerDep = Annotated[AIOKafkaProducer, Depends(get_producer)]
DatabaseDep = Annotated[Database, Depends(get_db)]

# The ``Idempotency-Key`` of a command (``shared/idempotency.py`` stores what it answered).
IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (a UUID): a retried request with the same key has its "
        "effect once and gets the first response. Kept 24 hours; reused with another request "
        "it is a 422.",
    ),
]


async def run_idempotent(
    db: Database,
    *,
    schema: str,
    tenant_id: str,
    key: str | None,
    request_hash: str,
    retention: timedelta,
    status_code: int,
    command: Callable[[AsyncSession], Awaitable[Any]],
) -> JSONResponse:
    """Run ``command`` in one transaction (the request's unit of work) unless ``key`` already
    ran it (``shared/idempotency.py``); answer once it has committed. Without a key, the
    command simply runs."""
    async with unit_of_work(db) as session:
        conn = await raw_connection(session)
        if key is not None:
            stored = await idempotency.replay(
                conn,
                schema,
                tenant_id=tenant_id,
                key=key,
                request_hash=request_hash,
                retention=retention,
            )
            if stored is not None:
                return JSONResponse(
                    stored.body,
                    status_code=stored.status_code,
                    headers={idempotency.REPLAYED_HEADER: "true"},
                )
        body = jsonable_encoder(await command(session))
        if key is not None:
            await idempotency.remember(
                conn,
                schema,
                tenant_id=tenant_id,
                key=key,
                request_hash=request_hash,
                status_code=status_code,
                response=body,
            )
    return JSONResponse(body, status_code=status_code)
