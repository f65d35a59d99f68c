"""Journey's commands: ``waypoint rebuild-contexts``."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("rebuild-contexts")
    def rebuild_contexts_command(
        tenant: Annotated[str, typer.Option(help="The tenant whose contexts to rebuild.")],
        customer: Annotated[str | None, typer.Option(help="Only this customer id.")] = None,
    ) -> None:
        """Re-fold customers' context documents from their stored events (after an upgrade)."""
        import asyncio
        import uuid

        from services.journey.config import JourneySettings
        from services.journey.context.rebuild import rebuild_contexts
        from shared.db import Database

        settings = JourneySettings()

        async def main() -> int:
            db = Database(settings.dsn, pool_size=2, application_name="journey-rebuild")
            try:
                return await rebuild_contexts(
                    db,
                    settings,
                    tenant=tenant,
                    customer_id=uuid.UUID(customer) if customer else None,
                )
            finally:
                await db.dispose()

        typer.echo(f"rebuilt {asyncio.run(main())} context(s)")
