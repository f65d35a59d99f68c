"""The journey map's command: ``waypoint rebuild-maps``."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("rebuild-maps")
    def rebuild_maps_command(
        tenant: Annotated[str | None, typer.Option(help="Only this tenant (default: all).")] = None,
    ) -> None:
        """Recompute journey maps (steps, journeys, aggregates) from the stored events."""
        import asyncio

        from services.journey.config import JourneySettings
        from services.journey.maps.rebuild import rebuild_maps
        from shared.db import Database

        settings = JourneySettings()

        async def main() -> None:
            db = Database(settings.dsn, pool_size=2, application_name="journey-rebuild-maps")
            try:
                for done in await rebuild_maps(db, tenant=tenant):
                    rate = done.steps / done.seconds if done.seconds else 0.0
                    typer.echo(
                        f"{done.tenant}: {done.customers} customer(s), {done.steps} step(s) "
                        f"from {done.events} event(s) in {done.seconds:.1f} s ({rate:,.0f} steps/s)"
                    )
            finally:
                await db.dispose()

        asyncio.run(main())
