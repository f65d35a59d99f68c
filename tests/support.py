"""Small keyword-only factories and helpers for tests (no fakes: they write real rows)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from shared.auth.models import ALL_SCOPES
from shared.auth.service import create_key, ensure_tenant
from shared.db import Database

T = TypeVar("T")


@dataclass
class TestTenant:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class TenantFactory:
    def __init__(self, db: Database):
        self.db = db

    async def __call__(
        self,
        *,
        scopes: list[str] | None = None,
        tenant_id: str | None = None,
        phone_region: str | None = None,
    ) -> TestTenant:
        tenant = tenant_id or f"t-{uuid.uuid4().hex[:12]}"
        async with self.db.session() as session:
            await ensure_tenant(session, tenant, phone_region=phone_region)
            key, _ = await create_key(
                session, tenant_id=tenant, name="test", scopes=scopes or ALL_SCOPES
            )
        return TestTenant(id=tenant, key=key)

    async def key(self, tenant: TestTenant, *, scopes: list[str]) -> str:
        async with self.db.session() as session:
            key, _ = await create_key(session, tenant_id=tenant.id, name="test", scopes=scopes)
        return key


def cloud_event(
    *,
    tenant: str,
    type: str = "contact.started",  # noqa: A002 - the CloudEvents attribute is called type
    identifiers: list[dict[str, Any]] | None = None,
    id: str | None = None,  # noqa: A002
    time: datetime | str | None = None,
    source: str = "tests",
    **data: Any,
) -> dict[str, Any]:
    """A structured-mode CloudEvent as a dict."""
    moment = time or datetime.now(UTC)
    return {
        "specversion": "1.0",
        "id": id or uuid.uuid4().hex,
        "source": source,
        "type": type,
        "time": moment.isoformat() if isinstance(moment, datetime) else moment,
        "tenant": tenant,
        "data": {
            "identifiers": identifiers
            or [{"type": "email", "value": f"{uuid.uuid4().hex[:8]}@customer.test"}],
            **data,
        },
    }


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app with its lifespan running (database, producer …)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns a truthy value (or raise its last AssertionError)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last:
        raise last
    raise AssertionError(f"condition not met within {timeout}s")


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on a real uvicorn server running ``app`` on a free port: what is sent,
    and when, is what a client sees (``ASGITransport`` waits for the whole app to finish)."""
    import uvicorn

    from shared.embedded import free_port

    port = free_port()
    # A long keep-alive: on a loaded machine the 5 s default can close a pooled connection just
    # as the client reuses it (ReadError), which says nothing about the app under test.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=120
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())

    async def up() -> bool:
        if serving.done():
            serving.result()  # start-up failed: raise why
            raise AssertionError("uvicorn stopped during start-up")
        return server.started

    try:
        await eventually(up, timeout=30, interval=0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


@asynccontextmanager
async def refused_at_commit(db: Database, table: str, tenant: str) -> AsyncIterator[None]:
    """While open, PostgreSQL refuses at COMMIT (not before) every transaction that wrote a row
    of ``tenant`` into ``table``: a deferred constraint trigger, as a deferred foreign key or
    exclusion constraint would."""
    from sqlalchemy import text

    name = f"refuse_at_commit_{uuid.uuid4().hex[:12]}"
    async with db.session() as session:
        await session.execute(
            text(
                f"CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.tenant_id = TG_ARGV[0] THEN RAISE EXCEPTION USING "
                "ERRCODE = 'check_violation', MESSAGE = 'refused at commit'; END IF; "
                "RETURN NULL; END $$"
            )
        )
        await session.execute(
            text(
                f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT OR UPDATE ON {table} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                f"EXECUTE FUNCTION public.{name}('{tenant}')"
            )
        )
    try:
        yield
    finally:
        async with db.session() as session:
            await session.execute(text(f"DROP TRIGGER {name} ON {table}"))
            await session.execute(text(f"DROP FUNCTION public.{name}()"))


def stands_alone(value: str, text: str) -> bool:
    """Whether ``value`` is in ``text`` as a value of its own, not inside a longer run of
    letters, digits and dashes: a short secret such as a PIN is looked for in dumps and pages
    that also hold UUIDs, hex ids and port numbers, which contain any four digits by chance."""
    return re.search(rf"(?<![0-9A-Za-z-]){re.escape(value)}(?![0-9A-Za-z-])", text) is not None


def sample(name: str, **labels: str) -> float:
    """A metric's current value in this process (0 before it is first observed): workers and
    apps under test run in the test's process, so their metrics are read here."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
