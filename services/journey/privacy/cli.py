"""``waypoint erase``: erase a customer in every service, as the API does (audited)."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("erase")
    def erase_command(
        customer: Annotated[str, typer.Argument(help="The customer id to erase.")],
        tenant: Annotated[str, typer.Option(help="The customer's tenant.")],
        reference: Annotated[
            str | None, typer.Option(help="Your request's reference (no personal data).")
        ] = None,
        wait: Annotated[
            float, typer.Option(help="Seconds to wait for every service to report (0: none).")
        ] = 30.0,
    ) -> None:
        """Erase a customer (and those merged into it) in every service; prints the receipt
        (JSON) once every service has applied it, or after --wait seconds."""
        import asyncio
        import json
        import uuid
        from typing import Any

        from services.journey.config import JourneySettings
        from services.journey.outbox import relay_for
        from services.journey.privacy.service import receipt, request_erasure
        from shared.auth.principal import Principal
        from shared.db import Database
        from shared.kafka import ensure_topics, make_producer
        from shared.privacy.crypto import Keyring

        settings = JourneySettings()

        async def main() -> dict[str, Any]:
            db = Database(settings.dsn, pool_size=1, application_name="waypoint-erase")
            producer = make_producer(settings)
            await ensure_topics(settings, [settings.topic_privacy])
            await producer.start()
            try:
                done = await request_erasure(
                    db=db,
                    settings=settings,
                    keyring=Keyring.from_setting(settings.sealing_keys),
                    principal=Principal(tenant_id=tenant, key_id="cli"),
                    customer_id=uuid.UUID(customer),
                    reference=reference,
                )
                # Committed: the journey worker's relay publishes it; publish it now if we can.
                relay = relay_for(db, producer, settings)
                try:
                    await relay.drain()
                except Exception as exc:  # noqa: BLE001 - it stays in the outbox for the worker
                    typer.echo(f"the broker did not take it now ({exc}); the worker will", err=True)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + wait
                while done["status"] != "done" and loop.time() < deadline:
                    await asyncio.sleep(0.5)
                    done = await receipt(db, tenant, uuid.UUID(done["id"]))
                return done
            finally:
                await producer.stop()
                await db.dispose()

        result = asyncio.run(main())
        typer.echo(json.dumps(result, default=str))
        if result["status"] != "done":
            typer.echo(f"erasure {result['id']}: not every service has reported yet", err=True)
