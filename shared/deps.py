"""Request dependencies shared by every service's endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from aiokafka import AIOKafkaProducer
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed on return, rolled back if the endpoint raises."""
    db: Database = request.app.state.db
    async with db.session() as session:
        yield session


async def get_producer(request: Request) -> AIOKafkaProducer:
    producer: AIOKafkaProducer = request.app.state.producer
    return producer


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SessionDep = Annotated[AsyncSession, Depends(get_session)]
ProducerDep = Annotated[AIOKafkaProducer, Depends(get_producer)]
DatabaseDep = Annotated[Database, Depends(get_db)]
