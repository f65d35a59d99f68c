"""``waypoint keys rotate | expire``: a key's life after ``waypoint keys create``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer

from shared.auth.cli import _run


def _keys_group(app: typer.Typer) -> typer.Typer:
    for group in app.registered_groups:
        if group.name == "keys" and group.typer_instance is not None:
            return group.typer_instance
    keys = typer.Typer(no_args_is_help=True, help="API keys (stored hashed, bound to a tenant).")
    app.add_typer(keys, name="keys")
    return keys


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else "-"


def register(app: typer.Typer) -> None:
    keys = _keys_group(app)

    @keys.command("rotate")
    def rotate(
        key_id: Annotated[uuid.UUID, typer.Argument(help="The key to replace.")],
        grace: Annotated[
            str, typer.Option(help="How long the old key keeps working (90d, 24h, 30m, 0).")
        ] = "24h",
        expires_in: Annotated[
            str | None, typer.Option(help="The new key expires after this long (default never).")
        ] = None,
    ) -> None:
        """Create a successor (same tenant, name, scopes; printed once) and expire the old key
        after a grace period, so both work while clients change over."""
        from shared.auth.keys import parse_duration, rotate_key

        grace_for = parse_duration(grace)
        lifetime = parse_duration(expires_in) if expires_in else None
        plaintext, new, old = _run(
            lambda s: rotate_key(s, key_id, grace=grace_for, expires_in=lifetime, actor="cli")
        )
        typer.echo(plaintext)
        typer.echo(
            f"new key {new.id} (expires {_when(new.expires_at)}); "
            f"old key {old.id} works until {_when(old.expires_at)}",
            err=True,
        )

    @keys.command("expire")
    def expire(
        key_id: Annotated[uuid.UUID, typer.Argument(help="The key.")],
        in_: Annotated[
            str | None,
            typer.Option("--in", help="Expire after this long from now (90d, 24h, 0: now)."),
        ] = None,
        never: Annotated[bool, typer.Option(help="Remove the expiry.")] = False,
    ) -> None:
        """Set or remove a key's expiry (refused with a clear 401 from then on)."""
        from shared.auth.keys import parse_duration, set_expiry

        if never == (in_ is not None):
            typer.echo("give exactly one of --in or --never", err=True)
            raise typer.Exit(2)
        at = None if never else datetime.now(UTC) + parse_duration(in_ or "0")
        info = _run(lambda s: set_expiry(s, key_id, at, actor="cli"))
        typer.echo(f"key {info.id} expires {_when(info.expires_at)}")
