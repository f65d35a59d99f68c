"""Ingest's commands: ``waypoint schema`` (regenerate or check the published JSON Schema)."""

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
