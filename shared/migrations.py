"""Alembic, programmatically: each service owns a PostgreSQL schema and its own version table.

``services/<name>/migrations/env.py`` calls ``run_env(schema, metadata)``; ``upgrade_all`` runs
them in order under an advisory lock so N processes starting together migrate once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from shared.db import Database

# Order matters only for first creation: auth first, since every service authenticates.
MIGRATION_PACKAGES: dict[str, Path] = {
    "auth": Path(__file__).parent / "auth" / "migrations",
    "ingest": Path(__file__).parent.parent / "services" / "ingest" / "migrations",
    "journey": Path(__file__).parent.parent / "services" / "journey" / "migrations",
    "alerts": Path(__file__).parent.parent / "services" / "alerts" / "migrations",
}
_LOCK_KEY = 0x5741_5950  # "WAYP"


def alembic_config(name: str, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATION_PACKAGES[name]))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def run_env(schema: str, metadata: MetaData) -> None:
    """Body of every service's ``env.py`` (online mode on a connection handed in by ``upgrade``)."""
    connection: Any = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `waypoint migrate`, which supplies the connection")
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, type_, _parent: type_ != "schema" or name == schema,
    )
    with context.begin_transaction():
        context.run_migrations()


def _upgrade_sync(connection: Connection, names: list[str]) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    for name in names:
        command.upgrade(alembic_config(name, connection), "head")


async def upgrade(db: Database, names: list[str] | None = None) -> None:
    """Bring the named schemas (default: all) to head, in one transaction, once across processes."""
    chosen = names or [n for n, path in MIGRATION_PACKAGES.items() if (path / "env.py").exists()]
    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade_sync, chosen)
