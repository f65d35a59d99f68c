"""Ingest's commands: ``waypoint schema`` (the published JSON Schema), ``waypoint redrive``."""

from __future__ import annotations

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
