"""Child processes of ``waypoint run``: prefixed output, restart with backoff when one crashes,
and a restart budget after which the supervisor gives up and stops everything.

Each child dies with the supervisor (Linux ``PR_SET_PDEATHSIG``: SIGTERM), so a ``kill -9`` of
``waypoint run`` leaves no worker behind to hold a port or a consumer group membership.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from shared.embedded import die_with_parent


def say(message: str) -> None:
    prefix = "\033[1m[waypoint]\033[0m" if sys.stdout.isatty() else "[waypoint]"
    sys.stdout.write(f"{prefix} {message}\n")
    sys.stdout.flush()


class Kind(StrEnum):
    api = "api"
    worker = "worker"
    demo = "demo"  # runs once; not restarted


@dataclass
class RestartPolicy:
    """At most ``max_restarts`` restarts within ``window`` seconds; backoff doubles per crash
    in the window, from ``first_delay`` to ``max_delay``."""

    max_restarts: int = 5
    window: float = 300.0
    first_delay: float = 1.0
    max_delay: float = 30.0
    crashes: deque[float] = field(default_factory=deque)

    def after_crash(self, now: float) -> float | None:
        """Seconds to wait before restarting, or None: too many crashes, give up."""
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > self.window:
            self.crashes.popleft()
        if len(self.crashes) > self.max_restarts:
            return None
        delay: float = self.first_delay * 2 ** (len(self.crashes) - 1)
        return min(delay, self.max_delay)


@dataclass
class Child:
    name: str
    argv: list[str]  # after ``python -m services.cli``
    kind: Kind
    color: str
    policy: RestartPolicy
    process: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    restarts: int = 0
    stopped: bool = False  # stopped on purpose: not restarted

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


async def _pump(name: str, color: str, stream: asyncio.StreamReader) -> None:
    prefix = f"\033[{color}m[{name}]\033[0m " if sys.stdout.isatty() else f"[{name}] "
    while line := await stream.readline():
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


class Supervisor:
    """Starts children, restarts the ones that crash, and stops them in order."""

    def __init__(self, env: dict[str, str], *, on_give_up: Callable[[str], None]):
        self.env = env
        self.on_give_up = on_give_up
        self.children: list[Child] = []
        self.stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    async def add(self, child: Child) -> Child:
        self.children.append(child)
        await self._spawn(child)
        self._watchers.append(asyncio.create_task(self._watch(child)))
        return child

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *child.argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # signals reach children only through us, in order
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        assert child.process.stdout is not None
        child.pump = asyncio.create_task(_pump(child.name, child.color, child.process.stdout))

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if child.pump is not None:
                await child.pump
            if self.stopping or child.stopped:
                return
            if child.kind is Kind.demo:
                if code != 0:
                    say(f"{child.name} exited with status {code} (not restarted)")
                return
            delay = child.policy.after_crash(time.monotonic())
            if delay is None:
                self.on_give_up(
                    f"{child.name} crashed {len(child.policy.crashes)} times within "
                    f"{child.policy.window:.0f}s (last exit status {code}); giving up"
                )
                return
            say(f"{child.name} exited with status {code}; restarting in {delay:.0f}s")
            await asyncio.sleep(delay)
            if self.stopping or child.stopped:
                return
            child.restarts += 1
            await self._spawn(child)

    def of_kind(self, *kinds: Kind) -> list[Child]:
        return [c for c in self.children if c.kind in kinds]

    async def stop(self, children: list[Child], timeout: float = 15.0) -> None:
        """SIGTERM (in reverse start order), wait at most ``timeout``, then SIGKILL."""
        for child in children:
            child.stopped = True
        for child in reversed(children):
            if child.running:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            if child.process is None:
                continue
            try:
                await asyncio.wait_for(child.process.wait(), timeout)
            except TimeoutError:
                say(f"{child.name} did not stop within {timeout:.0f}s; killing it")
                child.process.kill()
                await child.process.wait()
            if child.pump is not None:
                await child.pump

    async def close(self) -> None:
        """Stop every child, and the restart watchers."""
        self.stopping = True
        await self.stop(self.children)
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
