"""``waypoint keys``: create, list, revoke and bootstrap API keys (stored hashed)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer

keys = typer.Typer(no_args_is_help=True, help="API keys (stored hashed, bound to a tenant).")
T = TypeVar("T")


def _in_session(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(session)`` in one transaction on the configured database."""
    from shared.config import CommonSettings
    from shared.db import Database

    async def main() -> T:
        db = Database(CommonSettings().dsn, pool_size=1, application_name="waypoint-cli")
        try:
            async with db.session() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key is bound to (created if new).")],
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: events:write,events:read,context:read,context:write,"
            "alerts:read,alerts:write,analytics:read,admin"
        ),
    ],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "cli",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print id, key, tenant and scopes as one JSON object.")
    ] = False,
) -> None:
    """Create an API key: the key on stdout (shown once; only its hash is stored), its id on
    stderr (for `keys revoke`)."""
    from shared.auth.service import create_key

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]

    async def work(session: Any) -> tuple[str, Any]:
        return await create_key(session, tenant_id=tenant, name=name, scopes=wanted)

    key, row = _in_session(work)
    if as_json:
        shown = {"id": str(row.id), "key": key, "tenant": tenant, "name": name}
        typer.echo(json.dumps({**shown, "scopes": row.scopes}))
        return
    typer.echo(key)
    typer.echo(
        f"created key {row.id} ({name!r}, tenant {tenant!r}, scopes {','.join(row.scopes)}); "
        "the key is shown once, above",
        err=True,
    )


@keys.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every key: id, name, scopes, tenant, created, last used, revoked (never the key)."""
    from shared.auth.service import list_keys

    async def work(session: Any) -> list[Any]:
        return await list_keys(session, tenant_id=tenant)

    rows = _in_session(work)
    table = [
        {
            "id": str(r.id),
            "name": r.name,
            "scopes": ",".join(r.scopes),
            "tenant": r.tenant_id,
            "created": _when(r.created_at),
            "last_used": _when(r.last_used_at),
            "revoked": _when(r.revoked_at),
        }
        for r in rows
    ]
    if as_json:
        for item in table:
            typer.echo(json.dumps(item))
        return
    if not table:
        typer.echo("no keys" + (f" for tenant {tenant!r}" if tenant else ""), err=True)
        return
    columns = list(table[0])
    widths = {c: max(len(c), *(len(item[c]) for item in table)) for c in columns}
    typer.echo("  ".join(c.upper().replace("_", " ").ljust(widths[c]) for c in columns).rstrip())
    for item in table:
        typer.echo("  ".join(item[c].ljust(widths[c]) for c in columns).rstrip())


@keys.command("revoke")
def keys_revoke(
    key_id: Annotated[uuid.UUID, typer.Argument(help="The key's id (see `waypoint keys list`).")],
    tenant: Annotated[
        str | None, typer.Option(help="Only if the key belongs to this tenant.")
    ] = None,
) -> None:
    """Revoke a key (services notice within the key cache's TTL, 30 s by default)."""
    from shared.auth.service import revoke_key

    async def work(session: Any) -> bool:
        return await revoke_key(session, key_id=key_id, tenant_id=tenant)

    if not _in_session(work):
        owner = f" of tenant {tenant!r}" if tenant else ""
        typer.echo(f"no active key {key_id}{owner} (see `waypoint keys list`)", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@keys.command("bootstrap")
def keys_bootstrap() -> None:
    """Ensure WAYPOINT_BOOTSTRAP_API_KEY is an admin key (every scope) of the default tenant."""
    from shared.auth.service import ensure_bootstrap_key, ensure_tenant
    from shared.config import CommonSettings

    settings = CommonSettings()
    key = settings.bootstrap_api_key
    if not key:
        typer.echo("WAYPOINT_BOOTSTRAP_API_KEY is not set (see `waypoint keys generate`)", err=True)
        raise typer.Exit(1)

    async def work(session: Any) -> bool:
        await ensure_tenant(session, settings.default_tenant)
        return await ensure_bootstrap_key(session, tenant_id=settings.default_tenant, key=key)

    state = "created" if _in_session(work) else "already present"
    typer.echo(f"bootstrap key {key[:10]}… for tenant {settings.default_tenant!r}: {state}")


@keys.command("generate")
def keys_generate() -> None:
    """Print a fresh random key (for WAYPOINT_BOOTSTRAP_API_KEY); stores nothing."""
    from shared.auth.service import generate_key

    typer.echo(generate_key())


@keys.command("generate-encryption")
def keys_generate_encryption(
    key_id: Annotated[str, typer.Option("--id", help="The new key's id (e.g. a date).")] = "k1",
) -> None:
    """Print a fresh key-encryption key, `id:base64`: put it first in WAYPOINT_ENCRYPTION_KEYS."""
    from shared.privacy.crypto import generate_key

    typer.echo(generate_key(key_id))


@keys.command("rotate-encryption")
def keys_rotate_encryption() -> None:
    """Re-wrap every tenant's data key with the first WAYPOINT_ENCRYPTION_KEYS entry; after
    this the other entries can be removed. Stored values are not rewritten."""
    from shared.config import CommonSettings
    from shared.db import raw_connection
    from shared.privacy.crypto import Keyring, rewrap_all

    keyring = Keyring.from_setting(CommonSettings().sealing_keys)

    async def work(session: Any) -> tuple[int, int]:
        return await rewrap_all(await raw_connection(session), keyring)

    done, current = _in_session(work)
    typer.echo(f"re-wrapped {done} data key(s) with {keyring.primary!r}; {current} already were")
