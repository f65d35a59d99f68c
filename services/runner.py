"""``waypoint run``: the whole stack as child processes under one supervisor.

Starts the embedded PostgreSQL and broker (topics kept in the data folder) unless the
environment names real ones, migrates, creates topics, ensures an API key, starts every
service's API and processes with prefixed logs, records how to reach the stack in
``<data folder>/stack.json`` and seeds the demo once. A crashed process is restarted with
backoff; after too many crashes the supervisor gives up and stops everything.

Ctrl-C / SIGTERM stops in order: the APIs (and the demo), then waits until every consumer
group has consumed and committed what is in its topics, then the workers, the broker and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx

from services.drain import groups_of, wait_until_drained
from services.registry import ServiceSpec, available, load
from services.stack import StackInfo, find_running, without_password
from services.supervisor import Child, Kind, RestartPolicy, Supervisor, say
from shared.auth.models import ALL_SCOPES
from shared.auth.service import create_key, ensure_bootstrap_key, ensure_tenant
from shared.config import BrokerStorage, CommonSettings
from shared.db import Database, asyncpg_dsn
from shared.embedded import Broker, start_postgres
from shared.kafka import broker_reachable, ensure_topics
from shared.migrations import upgrade

METRICS_BASE_PORT = 9101  # workers' /metrics: 9101, 9102, … in registry order
COLORS = ["36", "32", "35", "33", "34", "31", "96", "92"]
DEMO_MARKER = "demo.json"
# The embedded broker is started from this one thread, which lives as long as the process:
# its children die with the thread that forked them (PR_SET_PDEATHSIG).
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="waypoint-spawner")


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


def settings_class(spec: ServiceSpec) -> Any:
    return load(spec.settings)


def _demo_wanted(settings: CommonSettings, identity: dict[str, Any]) -> bool:
    """The demo is sent once per database and broker: a restart does not send it again (its
    poison messages would be dead-lettered again)."""
    try:
        sent = json.loads((settings.data_dir / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return True
    return bool(sent != identity)


class Stack:
    """What ``waypoint run`` started, and how it stops."""

    def __init__(self, settings: CommonSettings, stop: asyncio.Event):
        self.settings = settings
        self.stop_event = stop
        self.env = dict(os.environ)
        self.pg: Any = None
        self.broker: Broker | None = None
        self.failure: str | None = None
        self.supervisor = Supervisor(self.env, on_give_up=self.give_up)
        self.broker_policy = RestartPolicy(
            max_restarts=settings.run_max_restarts, window=settings.run_restart_window_seconds
        )

    def give_up(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            say(f"{reason}; stopping everything (see the lines above for why)")
        self.stop_event.set()

    def policy(self) -> RestartPolicy:
        s = self.settings
        return RestartPolicy(max_restarts=s.run_max_restarts, window=s.run_restart_window_seconds)

    async def start_infrastructure(self, broker_port: int) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        if not settings.database_url:
            say(f"starting embedded PostgreSQL (data in {settings.data_dir / 'postgres'})")
            self.pg, uri = await loop.run_in_executor(
                _SPAWNER, start_postgres, settings.data_dir / "postgres"
            )
            self.env["DATABASE_URL"] = uri
        if not settings.kafka_bootstrap_servers:
            where = (
                f"topics in {settings.data_dir / 'broker'}"
                if settings.broker_storage is BrokerStorage.s3
                else "topics in memory"
            )
            say(f"starting embedded Kafka-protocol broker on 127.0.0.1:{broker_port} ({where})")
            self.broker = self.embedded_broker(broker_port)
            await loop.run_in_executor(_SPAWNER, self.broker.start)
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = self.broker.bootstrap
        self.settings = CommonSettings(
            database_url=self.env.get("DATABASE_URL"),
            kafka_bootstrap_servers=self.env.get("KAFKA_BOOTSTRAP_SERVERS"),
        )
        await self.wait_for_broker()

    async def wait_for_broker(self, timeout: float = 60.0) -> None:
        """Until the broker answers a metadata request (it listens before it can serve)."""
        deadline = time.monotonic() + timeout
        while not await broker_reachable(self.settings):
            if time.monotonic() > deadline or self.stop_event.is_set():
                raise RuntimeError(f"the broker {self.settings.bootstrap_servers} does not answer")
            await asyncio.sleep(0.5)

    def embedded_broker(self, port: int) -> Broker:
        data_dir = self.settings.data_dir / "broker"
        return Broker(
            port=port,
            storage=self.settings.broker_storage,
            data_dir=data_dir,
            log_path=self.settings.data_dir / "broker.log",
        )

    async def heal_broker(self) -> None:
        """Restart the embedded broker (and its object store) when it dies."""
        loop = asyncio.get_running_loop()
        while self.broker is not None and not self.stop_event.is_set():
            await asyncio.sleep(0.5)
            if self.broker.running() or self.stop_event.is_set():
                continue
            delay = self.broker_policy.after_crash(time.monotonic())
            if delay is None:
                self.give_up("the embedded broker keeps crashing")
                return
            say(f"the embedded broker exited; restarting it in {delay:.0f}s")
            await asyncio.sleep(delay)
            try:
                await loop.run_in_executor(_SPAWNER, self.broker.start)
                await self.wait_for_broker()
                await ensure_topics(self.settings)  # memory storage forgets them
                say("the embedded broker is back")
            except Exception as exc:  # noqa: BLE001 - counted as one more crash on the next turn
                say(f"the embedded broker did not start again: {exc}")

    async def start_services(self, services: dict[str, ServiceSpec], port_offset: int) -> None:
        for i, (name, spec) in enumerate(services.items()):
            color = COLORS[i % len(COLORS)]
            serve = ["serve", name, "--port", str(spec.port + port_offset)]
            await self.supervisor.add(Child(f"{name}-api", serve, Kind.api, color, self.policy()))
            for process in spec.processes:
                index = len(self.supervisor.of_kind(Kind.worker))
                argv = ["worker", name, process, "--metrics-port"]
                argv.append(str(METRICS_BASE_PORT + port_offset + index))
                child = Child(f"{name}-{process}", argv, Kind.worker, color, self.policy())
                await self.supervisor.add(child)

    def record(self, services: dict[str, ServiceSpec], port_offset: int) -> StackInfo:
        metrics = {
            c.name: f"http://127.0.0.1:{c.argv[-1]}/metrics"
            for c in self.supervisor.of_kind(Kind.worker)
        }
        info = StackInfo(
            pid=os.getpid(),
            database_url=without_password(self.settings.dsn),
            kafka_bootstrap_servers=self.settings.bootstrap_servers,
            broker_storage=self.broker.storage.value if self.broker else None,
            embedded_postgres=self.pg is not None,
            apis={n: f"http://127.0.0.1:{s.port + port_offset}" for n, s in services.items()},
            metrics=metrics,
        )
        info.write(self.settings.data_dir)
        return info

    def demo_identity(self, customers: int) -> dict[str, Any]:
        return {
            "database": without_password(self.settings.dsn),
            "broker": self.broker.storage.value if self.broker else self.settings.bootstrap_servers,
            "tenant": self.settings.default_tenant,
            "customers": customers,
            "seed": 42,
        }

    async def send_demo(self, customers: int) -> None:
        identity = self.demo_identity(customers)
        marker = self.settings.data_dir / DEMO_MARKER
        if not _demo_wanted(self.settings, identity):
            say(f"the demo was sent to this stack before; not again (delete {marker} to resend)")
            return
        argv = ["simulate", "--customers", str(customers), "--seed", "42"]
        # a few binary-mode events and poison messages show both bindings and dead letters
        argv += ["--tenant", self.settings.default_tenant, "--binary-fraction", "0.1"]
        argv += ["--invalid-fraction", "0.002"]
        demo = await self.supervisor.add(Child("demo", argv, Kind.demo, "37", self.policy()))
        assert demo.process is not None
        if await demo.process.wait() == 0:
            marker.write_text(json.dumps(identity) + "\n")

    async def stop(self) -> None:
        """APIs and demo, then drain, then workers, then the broker and PostgreSQL."""
        supervisor = self.supervisor
        supervisor.stopping = True
        await supervisor.stop(supervisor.of_kind(Kind.api, Kind.demo))
        workers = supervisor.of_kind(Kind.worker)
        if any(w.running for w in workers) and (self.broker is None or self.broker.running()):
            await self.drain()
        await supervisor.close()
        if self.broker is not None:
            say("stopping the broker")
            await asyncio.to_thread(self.broker.stop)
        if self.pg is not None:
            say("stopping PostgreSQL")
            await asyncio.to_thread(self.pg.cleanup)

    async def drain(self) -> None:
        timeout = self.settings.run_drain_timeout_seconds
        running = {
            c.name.removesuffix("-worker")
            for c in self.supervisor.of_kind(Kind.worker)
            if c.running
        }
        settings = {
            name: settings_class(spec)(
                database_url=self.settings.database_url,
                kafka_bootstrap_servers=self.settings.kafka_bootstrap_servers,
            )
            for name, spec in available().items()
            if name in running
        }
        groups = groups_of(settings)
        if not groups:
            return
        say(f"waiting for the workers to consume what was accepted (at most {timeout:.0f}s)")
        started = time.monotonic()

        def progress(lags: dict[str, int], elapsed: float) -> None:
            shown = ", ".join(f"{name} {lag:,}" for name, lag in lags.items())
            say(f"draining ({elapsed:.0f}s): records behind: {shown}")

        async def journey_outbox() -> int:  # its activity leaves after the commit
            conn = await asyncpg.connect(asyncpg_dsn(self.settings.dsn))
            try:
                return int(await conn.fetchval("SELECT count(*) FROM journey.outbox"))
            finally:
                await conn.close()

        try:
            lags = await wait_until_drained(
                self.settings.bootstrap_servers,
                groups,
                timeout=timeout,
                report=progress,
                outboxes={"journey": journey_outbox} if "journey" in settings else None,
            )
        except Exception as exc:  # noqa: BLE001 - a failed probe must not block the stop
            say(f"could not measure consumer lag ({exc}); stopping the workers anyway")
            return
        elapsed = time.monotonic() - started
        if any(lags.values()):
            left = ", ".join(f"{n} {lag:,}" for n, lag in lags.items() if lag)
            say(f"not drained after {elapsed:.0f}s (behind: {left}); the broker keeps the rest")
        else:
            say(f"drained in {elapsed:.1f}s: every consumer group is up to date")


async def run_stack(
    *,
    demo: bool = True,
    demo_customers: int = 200,
    broker_port: int = 19092,
    port_offset: int = 0,
) -> int:
    """Run everything until Ctrl-C / SIGTERM (0) or until the supervisor gives up (1)."""
    # platformdirs (used by embedded-postgres) warns when XDG_RUNTIME_DIR is unset; harmless.
    warnings.filterwarnings("ignore", module="platformdirs")
    settings = CommonSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if (other := find_running(settings.data_dir)) is not None:
        say(
            f"another `waypoint run` (pid {other.pid}) uses {settings.data_dir}; stop it first, "
            "or set WAYPOINT_DATA_DIR to run a second stack"
        )
        return 1
    stack = Stack(settings, stop)
    healer: asyncio.Task[None] | None = None
    try:
        services = available()
        wanted = [s.port + port_offset for s in services.values()]
        if not settings.kafka_bootstrap_servers:
            stale = stack.embedded_broker(broker_port)
            await loop.run_in_executor(_SPAWNER, stale.reap_stale)  # of a run that was killed
            wanted.append(broker_port)
        if busy := [p for p in wanted if _port_in_use(p)]:
            say(
                f"port(s) {', '.join(map(str, busy))} already in use: is another `make run` "
                "running? (`waypoint run --port-offset N --broker-port P` runs a second stack)"
            )
            return 1
        await stack.start_infrastructure(broker_port)
        healer = asyncio.create_task(stack.heal_broker())
        key = await _prepare(stack.settings)
        if stop.is_set():  # Ctrl-C while PostgreSQL or the broker was starting
            return 0
        if not services:
            say("no service package is present yet (services/ingest, journey, alerts)")
        await stack.start_services(services, port_offset)
        for name, spec in services.items():
            if not await _wait_ready(spec.port + port_offset, stop):
                if stop.is_set():
                    return 0 if stack.failure is None else 1
                say(f"{name} did not become ready on port {spec.port + port_offset}")
                return 1
        info = stack.record(services, port_offset)
        say("ready: " + ", ".join(f"{n} {url}/docs" for n, url in info.apis.items()))
        if info.metrics:
            shown = ", ".join(f"{n} :{url.split(':')[-1]}" for n, url in info.metrics.items())
            say(f"worker metrics: {shown}")
        say(f"API key (tenant {stack.settings.default_tenant!r}, every scope): {key}")
        say("use it as: Authorization: Bearer <key>")
        say(
            f"the `waypoint` CLI finds this stack through {settings.data_dir / 'stack.json'}; "
            "for other tools:"
        )
        say(f"  export DATABASE_URL='{info.database_url}'")
        say(f"  export KAFKA_BOOTSTRAP_SERVERS={info.kafka_bootstrap_servers}")
        say("press Ctrl-C to stop")
        demo_task = (
            asyncio.create_task(stack.send_demo(demo_customers))
            if demo and not stop.is_set()
            else None
        )
        await stop.wait()
        if demo_task is not None:
            demo_task.cancel()
            await asyncio.gather(demo_task, return_exceptions=True)
        say("stopping" if stack.failure is None else "stopping after a failure")
        return 0 if stack.failure is None else 1
    finally:
        if healer is not None:
            healer.cancel()
            await asyncio.gather(healer, return_exceptions=True)
        await stack.stop()
        StackInfo.remove(settings.data_dir)
        say("stopped")
