"""``waypoint run`` end to end: embedded PostgreSQL and broker, every available service, demo,
SIGTERM stops everything (nothing left running), data and the dev key persist across runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.registry import available
from shared.embedded import free_port

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
    def __init__(self, data_dir: Path, broker_port: int, port_offset: int, demo_customers: int):
        self.data_dir = data_dir
        self.marker = f"WAYPOINT_DATA_DIR={data_dir}"
        self.argv = [
            sys.executable, "-m", "services.cli", "run", "--broker-port", str(broker_port),
            "--port-offset", str(port_offset), "--demo-customers", str(demo_customers),
        ]  # fmt: skip
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _INFRA_VARIABLES}
        env.update({"WAYPOINT_DATA_DIR": str(self.data_dir), "WAYPOINT_LOG_JSON": "false"})
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
        code = await asyncio.wait_for(self.process.wait(), 90)
        await self.reader
        return code

    def kill_everything(self) -> None:
        for pid in _processes_of(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


_INFRA_VARIABLES = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "WAYPOINT_BOOTSTRAP_API_KEY"}


async def _gone(marker: str, timeout: float = 20) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    left = _processes_of(marker)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        left = _processes_of(marker)
    return left


async def test_run_starts_everything_and_sigterm_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "wp"
    offset = 20_000 + free_port() % 20_000  # away from 8001-8003 of a developer's `make run`
    broker_port = free_port()
    stack = Stack(data_dir, broker_port, offset, demo_customers=3)
    services = available()
    await stack.start()
    try:
        key = (await stack.wait_for_line(r"API key \(tenant 'default', every scope\): (\S+)"))[1]
        running = _processes_of(stack.marker)
        commands = " ".join(running.values())
        assert "postgres" in commands
        assert "tansu" in commands
        async with httpx.AsyncClient() as client:
            for spec in services.values():
                response = await client.get(f"http://127.0.0.1:{spec.port + offset}/healthz")
                assert response.json()["service"] == spec.name
            if services:  # every worker process serves its own metrics (consumer lag …)
                listed = (await stack.wait_for_line(r"worker metrics: (.*)"))[1]
                ports = re.findall(r":(\d+)/metrics", listed)
                assert len(ports) == sum(len(s.processes) for s in services.values())
                for port in ports:
                    response = await client.get(f"http://127.0.0.1:{port}/metrics")
                    assert "python_info" in response.text
        sent = await stack.wait_for_line(r"\[demo\] sent (\d+) records", timeout=120)
        assert int(sent[1]) > 0
        assert (data_dir / "dev-api-key").read_text().strip() == key
        assert len(running) >= 2 + 2 * len(services)  # postgres, broker, api + worker each

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

        assert await stack.stop() == 0, stack.output()[-4000:]
        left = await _gone(stack.marker)
        assert not left, f"still running after SIGTERM: {left}"
        assert "[waypoint] stopped" in stack.output()

        # A second run reuses the data directory: same database, same development key.
        again = Stack(data_dir, free_port(), offset, demo_customers=1)
        await again.start()
        match = await again.wait_for_line(r"API key \(tenant 'default', every scope\): (\S+)")
        assert match[1] == key
        assert await again.stop() == 0
        assert not await _gone(again.marker)
    finally:
        stack.kill_everything()


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
    offset = 20_000 + free_port() % 20_000
    stack = Stack(tmp_path / "wp", free_port(), offset, demo_customers=1)
    await stack.start()
    try:
        await stack.wait_for_line(r"starting embedded Kafka-protocol broker", timeout=120)
        assert await stack.stop() == 0, stack.output()[-4000:]
        assert not await _gone(stack.marker), "processes left after SIGTERM during start-up"
        assert "ready:" not in stack.output()
    finally:
        stack.kill_everything()
