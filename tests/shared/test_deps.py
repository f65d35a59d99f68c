"""The request's transaction commits before the response is sent: a write whose commit fails is
an error response, never a 2xx (tested over a real uvicorn server, where that timing shows)."""

from __future__ import annotations

import uuid
from typing import Annotated

import pytest
from fastapi import APIRouter, Path
from sqlalchemy import text

from shared.app import create_app
from shared.auth.service import audit
from shared.config import CommonSettings
from shared.db import Database
from shared.deps import SessionDep
from tests.support import served

router = APIRouter()


@router.post("/v1/probe/refused-at-commit/{sqlstate}")
async def refused_at_commit(
    sqlstate: Annotated[str, Path(pattern=r"^[0-9A-Z]{5}$")], session: SessionDep
) -> dict[str, bool]:
    """A write that PostgreSQL refuses only at COMMIT (a deferred constraint trigger)."""
    await session.execute(text("CREATE TEMP TABLE probe (x int) ON COMMIT DROP"))
    await session.execute(
        text(
            "CREATE OR REPLACE FUNCTION pg_temp.refuse_at_commit() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION USING ERRCODE = TG_ARGV[0], MESSAGE = 'refused at commit'; END $$"
        )
    )
    await session.execute(
        text(
            "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON pg_temp.probe "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            f"EXECUTE FUNCTION pg_temp.refuse_at_commit('{sqlstate}')"
        )
    )
    await session.execute(text("INSERT INTO pg_temp.probe VALUES (1)"))
    return {"written": True}


@router.post("/v1/probe/audit/{tenant}")
async def audited(tenant: str, session: SessionDep) -> dict[str, str]:
    marker = uuid.uuid4().hex
    await audit(session, tenant_id=tenant, actor="probe", action="probe.written", target=marker)
    return {"marker": marker}


def _app(settings_overrides):
    return create_app(
        service="probe",
        settings=CommonSettings(**settings_overrides),
        routers=[router],
        description="probe",
        configure_logs=False,
    )


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("23514", 409),  # check violation (a deferred constraint): the change conflicts
        ("23505", 409),  # unique violation
        ("40001", 409),  # serialization failure: retry
        ("08006", 503),  # connection failure: retry
        ("P0001", 500),  # anything else: our bug, a 500 (still never a 2xx)
    ],
)
async def test_a_commit_that_fails_is_the_response(
    settings_overrides, db: Database, sqlstate: str, status: int
):
    async with served(_app(settings_overrides)) as client:
        r = await client.post(f"/v1/probe/refused-at-commit/{sqlstate}")
        assert r.status_code == status, r.text
        if status < 500 or status == 503:
            assert "not saved" in r.json()["detail"] or "nothing was saved" in r.json()["detail"]


async def test_a_write_is_committed_when_its_response_arrives(
    settings_overrides, db: Database, make_tenant
):
    tenant = await make_tenant(scopes=["admin"])
    async with served(_app(settings_overrides)) as client:
        for _ in range(5):
            r = await client.post(f"/v1/probe/audit/{tenant.id}")
            assert r.status_code == 200, r.text
            async with db.session() as session:
                found = await session.scalar(
                    text("SELECT count(*) FROM auth.audit_log WHERE target = :m"),
                    {"m": r.json()["marker"]},
                )
            assert found == 1  # read-your-write: no window after the 200 where it is missing
