"""``waypoint simulate``: send simulated journeys to the raw topic through Kafka."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(simulate)


def simulate(
    customers: Annotated[int, typer.Option(min=1, help="How many simulated people.")] = 200,
    seed: Annotated[
        int, typer.Option(help="Same seed, same events and ids (re-sends dedupe).")
    ] = 42,
    tenant: Annotated[
        str | None, typer.Option(help="Tenant of the events (default: WAYPOINT_DEFAULT_TENANT).")
    ] = None,
    days: Annotated[float, typer.Option(min=1, help="Length of the window, ending now.")] = 30,
    binary_fraction: Annotated[
        float,
        typer.Option(min=0, max=1, help="Share sent as binary-mode CloudEvents (ce_* headers)."),
    ] = 0.0,
    invalid_fraction: Annotated[
        float,
        typer.Option(min=0, max=1, help="Poison messages inserted per event (dead-lettered)."),
    ] = 0.0,
    rate: Annotated[
        float | None, typer.Option(min=1, help="Events per second (default: as fast as possible).")
    ] = None,
) -> None:
    """Send realistic multi-channel journeys to the raw topic (the real pipeline ingests them)."""
    from services.simulator.generator import generate_keyed
    from services.simulator.producer import send
    from services.simulator.records import plan
    from shared.config import CommonSettings
    from shared.kafka import ensure_topics, make_producer

    settings = CommonSettings()
    target = tenant or settings.default_tenant
    records = plan(
        generate_keyed(customers=customers, seed=seed, tenant=target, days=days),
        seed=seed,
        tenant=target,
        binary_fraction=binary_fraction,
        invalid_fraction=invalid_fraction,
    )

    async def main() -> dict[str, int]:
        await ensure_topics(settings, [settings.topic_raw])
        producer = make_producer(settings)
        await producer.start()
        try:
            return dict(await send(producer, settings.topic_raw, records, rate=rate))
        finally:
            await producer.stop()

    started = time.monotonic()
    sent = asyncio.run(main())
    elapsed = time.monotonic() - started
    total = sum(sent.values())
    typer.echo(
        f"sent {total} records to {settings.topic_raw} for tenant {target!r} in {elapsed:.1f}s: "
        f"{sent.get('structured', 0)} structured, {sent.get('binary', 0)} binary, "
        f"{sent.get('poison', 0)} poison ({customers} customers, seed {seed})"
    )
