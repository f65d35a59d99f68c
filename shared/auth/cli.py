"""``waypoint tenants``: create tenants and set their own phone region."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from shared.errors import WaypointError

T = TypeVar("T")
REGION_HELP = (
    "Country of phone numbers written without a +country code (US, RU, CN, …); "
    "'default' follows WAYPOINT_PHONE_REGION."
)


def _run(work: Callable[..., Awaitable[T]]) -> T:
    """Run ``work(session)`` in one transaction; a refusal prints its reason and exits 1."""
    from shared.config import CommonSettings
    from shared.db import Database

    async def main() -> T:
        db = Database(CommonSettings().dsn, pool_size=1)
        try:
            async with db.session() as session:
                return await work(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except WaypointError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _region(region: str | None) -> str:
    from shared.config import CommonSettings

    return region or f"default ({CommonSettings().phone_region})"


def register(app: typer.Typer) -> None:
    tenants = typer.Typer(no_args_is_help=True, help="Tenants and their own settings.")
    app.add_typer(tenants, name="tenants")

    @tenants.command("create")
    def create(
        tenant: Annotated[str, typer.Argument(help="Tenant id (a-z, 0-9, '_', '-').")],
        name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
        phone_region: Annotated[str | None, typer.Option(help=REGION_HELP)] = None,
    ) -> None:
        """Create a tenant (then `waypoint keys create --tenant …` for its keys)."""
        from shared.auth.tenants import create_tenant

        info = _run(
            lambda s: create_tenant(s, tenant, name=name, phone_region=phone_region, actor="cli")
        )
        typer.echo(f"tenant {info.id!r} created; phone region: {_region(info.phone_region)}")

    @tenants.command("set-phone-region")
    def set_region(
        tenant: Annotated[str, typer.Argument(help="Tenant id.")],
        region: Annotated[str, typer.Argument(help=REGION_HELP)],
    ) -> None:
        """Set a tenant's phone region (APIs and workers apply it within their cache times)."""
        from shared.auth.tenants import set_phone_region

        info = _run(lambda s: set_phone_region(s, tenant, region, actor="cli"))
        typer.echo(f"tenant {info.id!r}: phone region {_region(info.phone_region)}")

    @tenants.command("list")
    def list_() -> None:
        """Every tenant with its phone region."""
        from shared.auth.tenants import list_tenants

        for info in _run(list_tenants):
            typer.echo(f"{info.id}\t{info.name}\t{_region(info.phone_region)}")
