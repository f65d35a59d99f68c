"""``waypoint alerts-rescore``: one decay-rescoring pass now (what the scheduler does hourly)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("alerts-rescore")
    def alerts_rescore(
        tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
        all_customers: Annotated[
            bool, typer.Option("--all", help="Every customer, not only those gone stale.")
        ] = False,
    ) -> None:
        """Rescore customers for time decay now (opens and resolves alerts like the scheduler)."""
        from services.alerts.config import AlertsSettings
        from services.alerts.scheduler import rescore_due
        from shared.db import Database

        settings = AlertsSettings()

        async def main() -> int:
            db = Database(settings.dsn, pool_size=3, application_name="alerts-rescore")
            try:
                stale = 0.0 if all_customers else settings.rescore_after_seconds
                return await rescore_due(
                    db,
                    now=datetime.now(UTC),
                    stale_after=timedelta(seconds=stale),
                    batch_size=settings.rescore_batch_size,
                    concurrency=settings.rescore_concurrency,
                    default_owner=settings.default_owner,
                    tenant_id=tenant,
                )
            finally:
                await db.dispose()

        typer.echo(f"rescored {asyncio.run(main())} customers")
