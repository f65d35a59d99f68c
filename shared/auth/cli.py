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

    @tenants.command("set-retention")
    def set_retention(
        tenant: Annotated[str, typer.Argument(help="Tenant id.")],
        raw_events: Annotated[int | None, typer.Option(help="Days of stored events.")] = None,
        dead_letters: Annotated[int | None, typer.Option(help="Days of dead letters.")] = None,
        timelines: Annotated[int | None, typer.Option(help="Days of journey events.")] = None,
        delivery_logs: Annotated[
            int | None, typer.Option(help="Days of notification delivery logs.")
        ] = None,
        default: Annotated[
            bool, typer.Option("--default", help="Back to the WAYPOINT_RETENTION_* defaults.")
        ] = False,
    ) -> None:
        """Set how long a tenant's data is kept (0: forever); the privacy processes purge in
        batches (docs/security.md#retention). Audited."""
        from typing import Any

        from shared.auth.service import audit
        from shared.db import raw_connection
        from shared.privacy.retention import KINDS, set_policy

        given = {
            "raw_events": raw_events,
            "dead_letters": dead_letters,
            "timelines": timelines,
            "delivery_logs": delivery_logs,
        }
        days: dict[str, int | None] = (
            dict.fromkeys(KINDS) if default else {k: v for k, v in given.items() if v is not None}
        )
        if any(v is not None and v < 0 for v in days.values()):
            typer.echo("days must be 0 (forever) or more", err=True)
            raise typer.Exit(1)

        async def work(session: Any) -> None:
            await set_policy(await raw_connection(session), tenant, days)
            await audit(
                session, tenant_id=tenant, actor="cli", action="tenant.retention_set", detail=days
            )

        _run(work)
        typer.echo(f"tenant {tenant!r}: retention {days or 'unchanged'}")
