"""``waypoint run`` end to end: embedded PostgreSQL and durable broker, every available service,
demo (sent once), SIGTERM drains and stops everything (nothing left running), data and the dev
key persist across runs, the CLI finds the stack; nothing accepted is lost when a worker, the
broker or the whole stack is killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.registry import available
from shared.db import asyncpg_dsn
from shared.embedded import free_port
from tests.support import cloud_event, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def _processes_of(marker: str) -> dict[int, str]:
    """Every live process whose environment carries ``marker`` (children inherit it: the
    services, the demo, the embedded postgres started by pg_ctl and the broker)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "State:\tZ" in status:  # a zombie is gone, only not yet reaped
            continue
        if marker.encode() in environ.split(b"\0"):
            found[int(entry.name)] = cmdline.strip()
    return found


class Stack:
    def __init__(
        self,
        data_dir: Path,
        broker_port: int,
        port_offset: int,
        demo_customers: int,
        *extra: str,
    ):
        self.data_dir = data_dir
        self.port_offset = port_offset
        self.marker = f"WAYPOINT_DATA_DIR={data_dir}"
        self.argv = [
            sys.executable, "-m", "services.cli", "run", "--broker-port", str(broker_port),
            "--port-offset", str(port_offset), "--demo-customers", str(demo_customers), *extra,
        ]  # fmt: skip
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self, **extra_env: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _INFRA_VARIABLES}
        env.update({"WAYPOINT_DATA_DIR": str(self.data_dir), "WAYPOINT_LOG_JSON": "false"})
        # The tests check that a stop drains, not how fast: a loaded 2-core machine needed more
        # than the default 60 s for 5,000 events (``stop`` waits as long).
        env["WAYPOINT_RUN_DRAIN_TIMEOUT_SECONDS"] = "600"
        env.update(extra_env)
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, pattern: str, timeout: float = 240) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if match := re.search(pattern, line):
                    return match
            assert self.process is not None
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}:\n{self.output()[-6000:]}")

    async def stop(self) -> int:
        assert self.process is not None
        assert self.reader is not None
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 600 + 90)
        await self.reader
        return code

    def kill_everything(self) -> None:
        for pid in _processes_of(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def info(self) -> dict[str, Any]:
        recorded: dict[str, Any] = json.loads((self.data_dir / "stack.json").read_text())
        return recorded

    async def stored(self, source: str) -> int:
        """Events of ``source`` in ingest's event store."""
        dsn = asyncpg_dsn(self.info()["database_url"])
        conn = await asyncpg.connect(dsn)
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM ingest.event WHERE source = $1", source
            )
            return count
        finally:
            await conn.close()

    async def dead_letters(self) -> int:
        conn = await asyncpg.connect(asyncpg_dsn(self.info()["database_url"]))
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM ingest.dead_letter")
            return count
        finally:
            await conn.close()

    async def post(self, key: str, source: str, count: int = 1000, retry: bool = False) -> None:
        """One batch of ``count`` new events over HTTP; asserts 202 (retries a 503 if asked)."""
        batch = [cloud_event(tenant="default", source=source) for _ in range(count)]
        url = f"http://127.0.0.1:{8001 + self.port_offset}/v1/events"
        headers = {"Authorization": f"Bearer {key}",
                   "Content-Type": "application/cloudevents-batch+json"}  # fmt: skip
        async with httpx.AsyncClient(timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                response = await client.post(url, json=batch, headers=headers)
                if response.status_code == 202 or not retry or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == count

    async def pid_of(self, needle: str, timeout: float = 60) -> int:
        """The one process whose command line holds ``needle`` (waits while it (re)starts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p, cmd in _processes_of(self.marker).items() if needle in cmd]
            if len(found) == 1:
                return found[0]
            await asyncio.sleep(0.2)
        raise AssertionError(f"no single {needle!r} process:\n{self.output()[-6000:]}")


_INFRA_VARIABLES = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "WAYPOINT_BOOTSTRAP_API_KEY"}


async def _gone(marker: str, timeout: float = 20) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    left = _processes_of(marker)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        left = _processes_of(marker)
    return left


async def test_run_starts_everything_drains_on_sigterm_and_keeps_what_it_accepted(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "wp"
    offset = _offset()
    broker_port = free_port()
    stack = Stack(data_dir, broker_port, offset, 20)
    services = available()
    source = f"accepted-{uuid.uuid4().hex[:8]}"
    await stack.start()
    try:
        key = (await stack.wait_for_line(r"API key \(tenant 'default', every scope\): (\S+)"))[1]
        running = _processes_of(stack.marker)
        commands = " ".join(running.values())
        assert "postgres" in commands
        assert "tansu" in commands
        assert "weed server" in commands  # the broker's topics live in the data folder
        async with httpx.AsyncClient() as client:
            for spec in services.values():
                response = await client.get(f"http://127.0.0.1:{spec.port + offset}/healthz")
                assert response.json()["service"] == spec.name
            if services:  # every worker process serves its own metrics (consumer lag …)
                listed = (await stack.wait_for_line(r"worker metrics: (.*)"))[1]
                ports = re.findall(r":(\d+)/metrics", listed)
                assert len(ports) == sum(len(s.processes) for s in services.values())
                for port in ports:

                    async def serves(port: str = port) -> bool:
                        try:
                            response = await client.get(f"http://127.0.0.1:{port}/metrics")
                        except httpx.ConnectError as exc:  # the worker is still starting
                            raise AssertionError(f"nothing on :{port}") from exc
                        except httpx.ReadTimeout as exc:  # listening, not answering yet: the
                            # stack's start-up saturates the machine, and `journey maps` runs
                            # at a lower CPU priority (WAYPOINT_JOURNEY_MAP_NICE)
                            raise AssertionError(f"no answer yet on :{port}") from exc
                        return "python_info" in response.text

                    try:
                        await eventually(serves, timeout=60)
                    except AssertionError as exc:
                        raise AssertionError(f"{exc}:\n{stack.output()[-8000:]}") from exc
        assert f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{broker_port}" in stack.output()
        sent = await stack.wait_for_line(r"\[demo\] sent (\d+) records.* (\d+) poison", 120)
        assert int(sent[1]) > 0
        assert int(sent[2]) > 0  # the demo shows dead letters
        assert (data_dir / "dev-api-key").read_text().strip() == key
        assert len(running) >= 2 + 2 * len(services)  # postgres, broker, api + worker each

        # The CLI finds this stack by itself, and says so.
        cli = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli", "keys", "list", "--tenant", "default"],
            env=_clean_env(data_dir), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert "using the stack `waypoint run` runs" in cli.stderr
        assert "development" in cli.stdout

        # A second stack on the same ports refuses to start, and leaves the first alone.
        clash = Stack(tmp_path / "other", broker_port, offset, demo_customers=1)
        await clash.start()
        assert clash.process is not None
        assert await asyncio.wait_for(clash.process.wait(), 60) == 1
        assert clash.reader is not None
        await clash.reader
        assert "already in use" in clash.output()
        lasting = {pid for pid, command in running.items() if "simulate" not in command}
        assert set(_processes_of(stack.marker)) >= lasting

        # 5,000 events accepted over HTTP, then SIGTERM: the workers drain before they stop.
        await eventually(stack.dead_letters, timeout=60)
        dead_letters = await stack.dead_letters()
        for _ in range(5):
            await stack.post(key, source)
        assert await stack.stop() == 0, stack.output()[-4000:]
        assert re.search(r"drained in [\d.]+s: every consumer group is up to date", stack.output())
        left = await _gone(stack.marker)
        assert not left, f"still running after SIGTERM: {left}"
        assert "[waypoint] stopped" in stack.output()
        assert not (data_dir / "stack.json").exists()

        # A second run reuses the data folder: same database, same key, all 5,000 stored, and
        # the demo is not sent again (its dead letters do not double).
        again = Stack(data_dir, free_port(), offset, 20)
        await again.start()
        match = await again.wait_for_line(r"API key \(tenant 'default', every scope\): (\S+)")
        assert match[1] == key
        await again.wait_for_line(r"the demo was sent to this stack before")

        async def all_stored() -> bool:
            assert await again.stored(source) == 5000
            return True

        await eventually(all_stored, timeout=60)
        assert await again.dead_letters() == dead_letters
        assert await again.stop() == 0
        assert not await _gone(again.marker)
    finally:
        stack.kill_everything()


async def test_kill_9_of_a_worker_the_broker_or_everything_loses_no_accepted_event(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "wp"
    offset = _offset()
    stack = Stack(data_dir, free_port(), offset, 1, "--no-demo")
    source = f"kill-{uuid.uuid4().hex[:8]}"
    # A restarted member waits for the dead one's session to expire (Tansu): keep that short.
    await stack.start(WAYPOINT_INGEST_SESSION_TIMEOUT_MS="4000")
    try:
        key = (await stack.wait_for_line(r"API key \(tenant 'default', every scope\): (\S+)"))[1]
        await stack.wait_for_line(r"press Ctrl-C to stop")

        async def stored(runner: Stack, expected: int) -> None:
            async def check() -> bool:
                assert await runner.stored(source) == expected
                return True

            await eventually(check, timeout=90, interval=0.5)

        # A SIGKILLed worker is restarted, and catches up.
        await stack.post(key, source)
        os.kill(await stack.pid_of("worker ingest worker"), signal.SIGKILL)
        await stack.post(key, source)
        await stack.wait_for_line(r"ingest-worker exited with status -9; restarting")
        await stored(stack, 2000)

        # The broker alone, killed right after a 202: restarted with what it had acknowledged.
        await stack.post(key, source)
        os.kill(await stack.pid_of("tansu"), signal.SIGKILL)
        await stack.wait_for_line(r"the embedded broker is back", timeout=60)
        await stack.post(key, source, retry=True)  # 503 while it was down
        await stored(stack, 4000)

        # Everything, killed right after a 202: a new run stores it.
        await stack.post(key, source)
        stack.kill_everything()
        assert not await _gone(stack.marker)
        again = Stack(data_dir, free_port(), offset, 1, "--no-demo")
        await again.start()
        await again.wait_for_line(r"press Ctrl-C to stop")
        await stored(again, 5000)
        assert await again.stop() == 0, again.output()[-4000:]
        assert not await _gone(again.marker)
    finally:
        stack.kill_everything()


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _INFRA_VARIABLES}
    return {**env, "WAYPOINT_DATA_DIR": str(data_dir)}


async def test_prepare_ensures_the_bootstrap_key_or_a_persistent_dev_key(
    db: Any, settings_overrides: dict[str, Any], tmp_path: Path
) -> None:
    from services.runner import _prepare
    from shared.auth.models import ALL_SCOPES
    from shared.auth.service import KeyVerifier, generate_key
    from shared.config import CommonSettings

    verifier = KeyVerifier(db.sessionmaker, ttl=0)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    base = {**settings_overrides, "data_dir": tmp_path, "default_tenant": tenant}

    bootstrap = generate_key()
    shown = await _prepare(CommonSettings(**base, bootstrap_api_key=bootstrap))
    assert bootstrap not in shown  # a real secret is not echoed
    assert bootstrap[:10] in shown
    principal = await verifier.verify(bootstrap)
    assert (principal.tenant_id, principal.scopes) == (tenant, frozenset(ALL_SCOPES))

    dev_key = await _prepare(CommonSettings(**base))
    assert (tmp_path / "dev-api-key").read_text().strip() == dev_key
    assert await _prepare(CommonSettings(**base)) == dev_key  # re-used, not a new one each run
    assert (await verifier.verify(dev_key)).tenant_id == tenant


async def test_sigterm_during_start_up_leaves_nothing_running(tmp_path: Path) -> None:
    offset = _offset()
    stack = Stack(tmp_path / "wp", free_port(), offset, demo_customers=1)
    await stack.start()
    try:
        await stack.wait_for_line(r"starting embedded Kafka-protocol broker", timeout=120)
        assert await stack.stop() == 0, stack.output()[-4000:]
        assert not await _gone(stack.marker), "processes left after SIGTERM during start-up"
        assert "ready:" not in stack.output()
    finally:
        stack.kill_everything()


def _offset() -> int:
    """A port offset for a test stack: away from a developer's `make run` (8001-8003, 9101-…),
    and below Linux's ephemeral range (32768-), where an outgoing connection may hold a port."""
    return 12_000 + free_port() % 11_600
