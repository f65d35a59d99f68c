"""Ingest's commands: ``waypoint schema`` (the published JSON Schema), ``waypoint redrive``,
``waypoint replay --from-store``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def schema(
        check: Annotated[
            bool, typer.Option(help="Only check the shipped file is up to date (exit 1 if not).")
        ] = False,
    ) -> None:
        """Write the event contract's JSON Schema to shared/events/ (or check it)."""
        from shared.events.schema import SCHEMA_PATH, render_schema, write_schema

        if check:
            current = SCHEMA_PATH.read_bytes() if SCHEMA_PATH.exists() else b""
            if current != render_schema():
                typer.echo(f"{SCHEMA_PATH} is out of date; run `waypoint schema`", err=True)
                raise typer.Exit(1)
            typer.echo(f"{SCHEMA_PATH} is up to date")
            return
        changed = write_schema()
        typer.echo(f"{'wrote' if changed else 'unchanged'} {SCHEMA_PATH}")

    @app.command("redrive")
    def redrive_command(
        reason: Annotated[
            list[str] | None,
            typer.Option(help="Only records refused for this reason (repeatable)."),
        ] = None,
        tenant: Annotated[str | None, typer.Option(help="Only records naming this tenant.")] = None,
        dry_run: Annotated[bool, typer.Option(help="Count what would be re-sent.")] = False,
    ) -> None:
        """Re-send dead-lettered records to the raw topic (after fixing their cause)."""
        import asyncio

        from services.ingest.config import IngestSettings
        from services.ingest.redrive import RedriveFilter, redrive

        counts = asyncio.run(
            redrive(
                IngestSettings(),
                RedriveFilter(reasons=tuple(reason or ()), tenant=tenant),
                dry_run=dry_run,
            )
        )
        verb = "would re-send" if dry_run else "re-sent"
        typer.echo(f"{verb} {sum(counts.values())} records: {dict(counts)}")

    @app.command("replay")
    def replay_command(
        from_store: Annotated[
            bool,
            typer.Option(
                "--from-store", help="Read ingest's event store (the only source, for now)."
            ),
        ] = False,
        tenant: Annotated[str | None, typer.Option(help="Only this tenant's events.")] = None,
        since: Annotated[
            datetime | None, typer.Option(help="From this moment (inclusive; ISO 8601, UTC).")
        ] = None,
        until: Annotated[
            datetime | None, typer.Option(help="Up to this moment (exclusive; ISO 8601, UTC).")
        ] = None,
        by: Annotated[
            str,
            typer.Option(help="Which time --since/--until apply to: received (stored) or time."),
        ] = "received",
        dry_run: Annotated[
            bool, typer.Option(help="Only count what would be re-published.")
        ] = False,
    ) -> None:
        """Re-publish stored events to the normalized topic (after a broker lost data);
        downstream skips what it already has."""
        import asyncio

        from services.ingest.config import IngestSettings
        from services.ingest.replay import Selection, TimeField, replay

        if not from_store:
            typer.echo("say where to replay from: --from-store (ingest's event store)", err=True)
            raise typer.Exit(2)
        if by not in TimeField.__members__:
            typer.echo("--by is received or time", err=True)
            raise typer.Exit(2)
        selection = Selection(
            tenant=tenant, since=_utc(since), until=_utc(until), field=TimeField(by)
        )
        settings = IngestSettings()

        def progress(done: int, total: int) -> None:
            typer.echo(f"published {done:,} / {total:,} ({100 * done // max(total, 1)}%)", err=True)

        counts = asyncio.run(replay(settings, selection, dry_run=dry_run, progress=progress))
        by_tenant = ", ".join(f"{t} {n:,}" for t, n in counts.items()) or "none"
        verb = "would re-publish" if dry_run else "re-published"
        typer.echo(
            f"{verb} {sum(counts.values()):,} stored events to {settings.topic_normalized} "
            f"(by tenant: {by_tenant})"
        )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
