"""Database access: one async SQLAlchemy engine per process (asyncpg driver underneath).

The boundary owns the transaction: ``session_scope`` / the ``SessionDep`` request dependency
commits or rolls back; repositories and services only ``flush()``. Hot paths that move thousands
of rows use the asyncpg connection under the same transaction (``raw_connection``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# One naming convention for every constraint, so migrations name them predictably.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """Metadata for one service's schema, with the shared naming convention."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def sqlalchemy_url(dsn: str) -> str:
    """``postgresql://…`` → ``postgresql+asyncpg://…`` (keeps ``?host=/socket/dir``)."""
    parts = urlsplit(dsn)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme in {"postgres", "postgresql"}:
        scheme = "postgresql+asyncpg"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def asyncpg_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


async def _no_session_state(_conn: asyncpg.Connection) -> None:
    return None


async def raw_pool(dsn: str, name: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    """A plain asyncpg pool (prepared statements, no ORM, no pre-ping) for hot paths that own
    their transactions: the journey API's reads, the journey worker's chunks. Its users leave
    no session state on a connection (no SET, no LISTEN, session advisory locks or temporary
    tables; transaction-scoped locks end with the transaction), so a released connection skips
    asyncpg's ``RESET ALL`` and its round trip. A connection the server closed is replaced on
    acquire."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_dsn(dsn),
        min_size=min_size,
        max_size=max_size,
        server_settings={"application_name": name},
        reset=_no_session_state,
    )
    return pool


class Database:
    """Engine + session factory for one process, built in a lifespan, never at import."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        application_name: str = "waypoint",
        pool_timeout: float = 30.0,
    ):
        self.dsn = dsn
        # A request that waits ``pool_timeout`` for a connection is answered 503 + Retry-After
        # (shared/error_handlers.py): the process is over its capacity.
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(dsn),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=pool_timeout,
            pool_pre_ping=True,
            connect_args={"server_settings": {"application_name": application_name}},
        )
        self.sessionmaker = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block succeeds, rolls back when it raises."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection behind a session, inside the session's transaction (for COPY etc.)."""
    conn = await session.connection()
    raw: Any = await conn.get_raw_connection()
    adapted = raw.dbapi_connection
    if getattr(adapted, "_transaction", None) is None:
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; without
        # one, work on the driver connection would autocommit outside the session's transaction.
        await conn.exec_driver_sql("SELECT 1")
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def stage_rows(
    conn: asyncpg.Connection, table: str, columns: str, records: Sequence[tuple[Any, ...]]
) -> None:
    """COPY ``records`` into ``table``, a temporary table of this session (created on first
    use, emptied before each use and at commit), for one ``INSERT ... SELECT`` that reads it in
    COPY order (the callers' key order): binary COPY encodes a row's values without the
    per-element checks asyncpg makes on the arrays an ``unnest`` takes (about 5x less client
    CPU per row, the server's about the same). Emptied by TRUNCATE, not DELETE: a rebuild
    flushes hundreds of batches in one transaction, and deleted rows would stay to be scanned
    until it ends. Rolled back with the caller's transaction, like the rest of its writes."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table} ({columns}) ON COMMIT DELETE ROWS; "
        f"TRUNCATE {table}"
    )
    await conn.copy_records_to_table(table, records=records)
