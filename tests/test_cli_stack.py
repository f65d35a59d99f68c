"""The CLI finds a running stack through ``<data folder>/stack.json``; its errors are one line.

The CLI runs as a subprocess against the session's real PostgreSQL and broker, recorded in a
stack file the way ``waypoint run`` records them (the full ``waypoint run`` is in
test_runner.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.stack import StackInfo, find_running, without_password

_INFRA = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "WAYPOINT_DATABASE_URL")


def waypoint(*argv: str, data_dir: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _INFRA and k != "WAYPOINT_DATA_DIR"}
    env.update(WAYPOINT_DATA_DIR=str(data_dir), **extra_env)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def supervisor() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line says ``run``, standing for ``waypoint run``."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "run"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def stack_dir(
    tmp_path: Path, infra: dict[str, str], supervisor: subprocess.Popen[bytes], db: Any
) -> Path:
    StackInfo(
        pid=supervisor.pid,
        database_url=infra["database_url"],
        kafka_bootstrap_servers=infra["kafka_bootstrap_servers"],
        broker_storage="memory",
    ).write(tmp_path)
    return tmp_path


def test_stack_file_is_found_only_while_its_supervisor_runs(
    tmp_path: Path, supervisor: subprocess.Popen[bytes]
) -> None:
    info = StackInfo(pid=supervisor.pid, database_url="postgresql://u@h/db",
                     kafka_bootstrap_servers="127.0.0.1:1")  # fmt: skip
    info.write(tmp_path)
    assert (tmp_path / "stack.json").stat().st_mode & 0o777 == 0o600
    found = find_running(tmp_path)
    assert found is not None
    assert found.kafka_bootstrap_servers == "127.0.0.1:1"
    supervisor.kill()
    supervisor.wait()
    assert find_running(tmp_path) is None  # a stale file from a killed run is ignored
    StackInfo(pid=os.getpid(), database_url="x", kafka_bootstrap_servers="y").write(tmp_path)
    assert find_running(tmp_path) is None  # a live pid that is not `waypoint run`


def test_an_external_database_password_is_not_recorded() -> None:
    assert without_password("postgresql://app:s3cret@db:5432/wp") == "postgresql://app@db:5432/wp"
    assert without_password("postgresql://app@db/wp") == "postgresql://app@db/wp"


def test_keys_create_list_revoke_against_the_running_stack(stack_dir: Path) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    created = waypoint("keys", "create", "--tenant", tenant, "--scopes", "events:write",
                       "--name", "crm-sync", data_dir=stack_dir)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "using the stack `waypoint run` runs" in created.stderr
    key = created.stdout.strip()
    assert key.startswith("wp_")
    key_id = created.stderr.split("created key ")[1].split()[0]
    uuid.UUID(key_id)

    listed = waypoint("keys", "list", "--tenant", tenant, "--json", data_dir=stack_dir)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["name"], r["scopes"], r["tenant"], r["revoked"]) for r in rows] == [
        (key_id, "crm-sync", "events:write", tenant, "-")
    ]
    assert key not in listed.stdout
    table = waypoint("keys", "list", "--tenant", tenant, data_dir=stack_dir).stdout
    assert table.splitlines()[0].split() == [
        "ID", "NAME", "SCOPES", "TENANT", "CREATED", "LAST", "USED", "REVOKED"
    ]  # fmt: skip

    revoked = waypoint("keys", "revoke", key_id, data_dir=stack_dir)
    assert revoked.returncode == 0, revoked.stderr
    again = waypoint("keys", "list", "--tenant", tenant, "--json", data_dir=stack_dir)
    assert json.loads(again.stdout)["revoked"] != "-"
    twice = waypoint("keys", "revoke", key_id, data_dir=stack_dir)
    assert twice.returncode == 1
    assert "no active key" in twice.stderr


async def test_keys_list_shows_when_a_key_was_last_used(db: Any, make_tenant: Any) -> None:
    from shared.auth.service import KeyVerifier, list_keys

    tenant = await make_tenant(scopes=["events:read"])
    async with db.session() as session:
        (row,) = await list_keys(session, tenant_id=tenant.id)
    assert row.last_used_at is None
    await KeyVerifier(db.sessionmaker, ttl=0).verify(tenant.key)
    async with db.session() as session:
        (row,) = await list_keys(session, tenant_id=tenant.id)
    assert row.last_used_at is not None


def test_errors_are_one_line_saying_what_to_do(tmp_path: Path, stack_dir: Path) -> None:
    nothing = waypoint("keys", "list", data_dir=tmp_path / "empty")
    assert nothing.returncode == 1
    assert nothing.stderr.count("\n") == 1, nothing.stderr
    assert "no PostgreSQL" in nothing.stderr
    assert "make run" in nothing.stderr
    assert "Traceback" not in nothing.stderr

    simulate = waypoint("simulate", "--customers", "1", data_dir=tmp_path / "empty")
    assert simulate.returncode == 1
    assert simulate.stderr.startswith("error: no broker")
    assert simulate.stderr.count("\n") == 1

    refused = waypoint(
        "keys", "list", data_dir=tmp_path, DATABASE_URL="postgresql://u@127.0.0.1:1/x"
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith("error: cannot use PostgreSQL")
    assert "Traceback" not in refused.stderr

    bad_scope = waypoint("keys", "create", "--tenant", "x", "--scopes", "nope", data_dir=stack_dir)
    assert bad_scope.returncode == 1
    assert bad_scope.stderr.splitlines()[-1].startswith("error: unknown scopes ['nope']")
