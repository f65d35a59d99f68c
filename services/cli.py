"""The ``waypoint`` command line: run the stack, serve one service, run a worker, manage keys.

Commands other than ``run``, ``serve`` and ``worker`` use the stack that ``waypoint run`` runs
(``<data folder>/stack.json``) for what the environment leaves unset, and say so on stderr.
Errors are one line saying what to do (``--traceback`` shows the traceback instead).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, Any

import typer

from services.keys_cli import keys
from services.registry import SERVICES, available, load
from shared import faults

app = typer.Typer(
    no_args_is_help=True,
    help="Waypoint: cross-channel customer journey backend.",
    pretty_exceptions_enable=False,
)
app.add_typer(keys, name="keys")
# These start the stack or are started by it with everything named; these need no stack.
_OWN_INFRASTRUCTURE = {"run", "serve", "worker"}
_NO_INFRASTRUCTURE = {"settings", "processes", "schema"}
_show_traceback = False


@app.callback()
def _use_running_stack(
    ctx: typer.Context,
    traceback: Annotated[
        bool, typer.Option("--traceback", help="On an error, show the traceback.")
    ] = False,
) -> None:
    """Fill DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS from the running stack when unset."""
    global _show_traceback
    _show_traceback = traceback
    command = ctx.invoked_subcommand
    if command in _OWN_INFRASTRUCTURE or command in _NO_INFRASTRUCTURE:
        return
    import logging

    from services.stack import fill_from_running_stack
    from shared.config import CommonSettings

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its errors reach us, once

    settings = CommonSettings()
    found, note = fill_from_running_stack(
        settings.data_dir,
        database_url=settings.database_url,
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
    )
    if note:
        os.environ.update(found)  # for this command and the settings classes it builds
        typer.echo(note, err=True)


def _settings(service: str | None = None) -> Any:
    from shared.config import CommonSettings

    if service is None:
        return CommonSettings()
    settings_cls: Any = load(SERVICES[service].settings)
    return settings_cls()


@app.command()
def run(
    demo: Annotated[bool, typer.Option(help="Seed a simulated demo once the stack is up.")] = True,
    demo_customers: Annotated[int, typer.Option(help="Customers in the demo.")] = 200,
    broker_port: Annotated[int, typer.Option(help="Port of the embedded broker.")] = 19092,
    port_offset: Annotated[
        int, typer.Option(help="Added to every service's port (8001+N …), to run two stacks.")
    ] = 0,
) -> None:
    """Start the whole stack (embedded PostgreSQL and broker unless the environment names real ones)."""
    from services.runner import run_stack

    code = asyncio.run(
        run_stack(
            demo=demo,
            demo_customers=demo_customers,
            broker_port=broker_port,
            port_offset=port_offset,
        )
    )
    raise typer.Exit(code)


@app.command()
def migrate() -> None:
    """Apply every schema's migrations (idempotent, safe to run from several machines)."""
    from shared.db import Database
    from shared.migrations import upgrade

    async def main() -> None:
        db = Database(_settings().dsn, pool_size=1)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(main())
    typer.echo("migrated")


@app.command("create-topics")
def create_topics() -> None:
    """Create Waypoint's Kafka topics if they are missing."""
    from shared.kafka import ensure_topics

    asyncio.run(ensure_topics(_settings()))
    typer.echo("topics ready")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="ingest, journey or alerts")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Default: the service's port.")] = None,
    workers: Annotated[
        int, typer.Option(help="uvicorn processes sharing the port (each its own app).")
    ] = 1,
) -> None:
    """Serve one service's HTTP API."""
    import uvicorn

    spec = SERVICES[service]
    faults.arm(_settings(service).fault_crash_at)  # the fault suite's (one process; off unless set)
    uvicorn.run(
        spec.app_factory,
        factory=True,
        host=host,
        port=port or spec.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        workers=workers,
    )


@app.command()
def worker(
    service: Annotated[str, typer.Argument(help="ingest, journey or alerts")],
    process: Annotated[
        str,
        typer.Argument(help="worker (and the others listed by `waypoint processes`)"),
    ] = "worker",
    metrics_port: Annotated[
        int, typer.Option(help="Serve this process's Prometheus metrics on this port (0: off).")
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option(help="Address for the metrics server.")
    ] = "127.0.0.1",
) -> None:
    """Run one of a service's background processes (consumer, notifier, scheduler)."""
    target: Any = load(SERVICES[service].processes[process])
    if metrics_port:
        # Workers have no HTTP API; consumer lag and batch metrics live in this process.
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    settings = _settings(service)
    faults.arm(settings.fault_crash_at)  # the fault suite's crash points (off unless set)
    asyncio.run(target(settings))


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(scope, environment variable, default, description) for every setting, from the code."""
    from pydantic import AliasChoices

    from shared.config import CommonSettings

    classes: list[tuple[str, Any]] = [("common", CommonSettings)]
    classes += [(name, load(spec.settings)) for name, spec in available().items()]
    rows = []
    for scope, cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            if scope != "common" and name in CommonSettings.model_fields:
                continue
            alias = field.validation_alias
            env = (
                str(alias.choices[0])
                if isinstance(alias, AliasChoices)
                else (prefix + name).upper()
            )
            default = field.get_default(call_default_factory=True)
            shown = "" if default is None else getattr(default, "value", default)
            rows.append((scope, env, str(shown), field.description or ""))
    return rows


@app.command("settings")
def settings_table() -> None:
    """Print every setting: environment variable, default and meaning (Markdown table)."""
    typer.echo("| service | environment variable | default | meaning |")
    typer.echo("|---|---|---|---|")
    for scope, env, default, description in settings_rows():
        shown = f"`{default}`" if default else ""
        typer.echo(f"| {scope} | `{env}` | {shown} | {description} |")


@app.command()
def processes() -> None:
    """List every service's port and background processes."""
    for spec in SERVICES.values():
        typer.echo(f"{spec.name}: api on :{spec.port}; processes: {', '.join(spec.processes)}")


def _register_optional(module: str) -> None:
    """Service-owned commands (``simulate``, ``schema`` …) register themselves when present."""
    import importlib
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is not there either
        found = False
    if found:
        importlib.import_module(module).register(app)


for _module in (
    "shared.auth.cli",
    "shared.auth.keys_cli",
    "services.simulator.cli",
    "services.ingest.cli",
    "services.journey.cli",
    "services.journey.maps.cli",
    "services.journey.privacy.cli",
    "services.alerts.cli",
):
    _register_optional(_module)


def _one_line(exc: BaseException) -> str:
    """What went wrong and what to do, for the errors a user can meet."""
    from aiokafka.errors import KafkaError
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError

    from shared.config import InfrastructureMissing
    from shared.errors import WaypointError

    if isinstance(exc, InfrastructureMissing | WaypointError):
        return str(exc)
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid settings: {problems} (see `waypoint settings`)"
    if isinstance(exc, DBAPIError | ConnectionError | OSError) and not isinstance(exc, KafkaError):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        if "does not exist" in reason:
            return f"PostgreSQL: {reason}; run `waypoint migrate` (or `make run`) first"
        return (
            f"cannot use PostgreSQL: {reason}; is the stack running (`make run`), "
            "or is DATABASE_URL right?"
        )
    if isinstance(exc, KafkaError):
        return (
            f"cannot use the broker: {exc}; is the stack running (`make run`), "
            "or is KAFKA_BOOTSTRAP_SERVERS right?"
        )
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first} (run with --traceback for details)"


def main() -> None:
    """The ``waypoint`` entry point: the app, with one-line errors instead of tracebacks."""
    try:
        app()
    except Exception as exc:
        if _show_traceback:
            raise
        typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
