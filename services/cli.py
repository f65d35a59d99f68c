"""The ``waypoint`` command line: run the stack, serve one service, run a worker, manage keys."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import typer

from services.registry import SERVICES, available, load

app = typer.Typer(no_args_is_help=True, help="Waypoint: cross-channel customer journey backend.")
keys = typer.Typer(no_args_is_help=True, help="API keys (stored hashed, bound to a tenant).")
app.add_typer(keys, name="keys")


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
) -> None:
    """Serve one service's HTTP API."""
    import uvicorn

    spec = SERVICES[service]
    uvicorn.run(
        spec.app_factory,
        factory=True,
        host=host,
        port=port or spec.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


@app.command()
def worker(
    service: Annotated[str, typer.Argument(help="ingest, journey or alerts")],
    process: Annotated[
        str,
        typer.Argument(help="worker (and, for alerts, the others listed by `waypoint processes`)"),
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
    asyncio.run(target(_settings(service)))


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


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key is bound to (created if new).")],
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: events:write,events:read,context:read,alerts:read,alerts:write,analytics:read,admin"
        ),
    ],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "cli",
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from shared.auth.service import create_key
    from shared.db import Database

    async def main() -> str:
        db = Database(_settings().dsn, pool_size=1)
        try:
            async with db.session() as session:
                key, _row = await create_key(
                    session,
                    tenant_id=tenant,
                    name=name,
                    scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                )
            return key
        finally:
            await db.dispose()

    typer.echo(asyncio.run(main()))


@keys.command("revoke")
def keys_revoke(
    tenant: Annotated[str, typer.Option()],
    key_id: Annotated[uuid.UUID, typer.Argument()],
) -> None:
    """Revoke a key (takes effect within the key cache's TTL)."""
    from shared.auth.service import revoke_key
    from shared.db import Database

    async def main() -> bool:
        db = Database(_settings().dsn, pool_size=1)
        try:
            async with db.session() as session:
                return await revoke_key(session, tenant_id=tenant, key_id=key_id)
        finally:
            await db.dispose()

    if not asyncio.run(main()):
        typer.echo("no such active key", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


@keys.command("bootstrap")
def keys_bootstrap() -> None:
    """Ensure WAYPOINT_BOOTSTRAP_API_KEY is an admin key (every scope) of the default tenant."""
    from shared.auth.service import ensure_bootstrap_key, ensure_tenant
    from shared.db import Database

    settings = _settings()
    key = settings.bootstrap_api_key
    if not key:
        typer.echo("WAYPOINT_BOOTSTRAP_API_KEY is not set (see `waypoint keys generate`)", err=True)
        raise typer.Exit(1)

    async def main() -> bool:
        db = Database(settings.dsn, pool_size=1)
        try:
            async with db.session() as session:
                await ensure_tenant(session, settings.default_tenant)
                return await ensure_bootstrap_key(
                    session, tenant_id=settings.default_tenant, key=key
                )
        finally:
            await db.dispose()

    created = asyncio.run(main())
    state = "created" if created else "already present"
    typer.echo(f"bootstrap key {key[:10]}… for tenant {settings.default_tenant!r}: {state}")


@keys.command("generate")
def keys_generate() -> None:
    """Print a fresh random key (for WAYPOINT_BOOTSTRAP_API_KEY); stores nothing."""
    from shared.auth.service import generate_key

    typer.echo(generate_key())


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
    "services.simulator.cli",
    "services.ingest.cli",
    "services.journey.cli",
    "services.journey.maps.cli",
    "services.alerts.cli",
):
    _register_optional(_module)


if __name__ == "__main__":
    app()
