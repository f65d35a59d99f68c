"""A small, cheap HTTP/1.1 load generator (keep-alive, asyncio protocols on uvloop) for the
journey benches.

Runs in its own process so the server under test does not share its event loop:
``python bench/_journey_load.py < spec.json`` prints one JSON line. Two modes:
- closed loop (``rate`` null): ``concurrency`` connections send back to back → max throughput;
- open loop (``rate`` req/s): request *i* is due at ``start + i / rate``; a timer sends every
  request that is due on an idle connection (or queues it until one is free), and latency is
  measured from the due time, so a stalled server shows up as latency (no coordinated omission).

It is built to cost little CPU (the server under test shares the cores): protocol callbacks, not
streams; no task or future per request; responses parsed by their ``content-length`` only. Its
own share of a tail is reported: ``send_late_*`` is how late the timer sent requests that found a
free connection (the generator's own stalls: its loop, the CPU it was denied), ``queued`` how
many requests waited for a connection (the server was slow to answer the earlier ones).
Optional spec keys: ``cpu`` (pin this process to that CPU), ``nice`` (its priority). Per-second
answers, p99 and max are in ``per_second``, to line up with the server's figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import deque
from typing import Any, cast

_now = time.perf_counter
TICK = 0.001  # seconds between the open loop's sends, at least


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0  # the in-flight request's due time (0: idle)
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, due: float) -> None:
        load = self.load
        self.due = due
        transport = self.transport
        assert transport is not None
        transport.write(load.requests[load.sent % load.n_requests])
        load.sent += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            start = buffer.find(b"content-length:", 0, end)
            if start < 0:
                start = buffer.lower().find(b"content-length:", 0, end)
            length = 0
            if start >= 0:
                stop = buffer.find(b"\r\n", start, end + 2)
                length = int(buffer[start + 15 : stop])
            if len(buffer) < end + 4 + length:
                return
            status = bytes(buffer[9:12])
            del buffer[: end + 4 + length]
            self.load.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - the error counts
        """The server closed it (e.g. uvicorn's keep-alive timeout) or it failed: an answer
        that was due is an error; a new connection takes this one's place."""
        self.closed = True
        load = self.load
        if self.due:
            load.errors += 1
            self.due = 0.0
        if self in load.idle:
            load.idle.remove(self)
        if not load.finished:
            load.reconnect()


class _Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.host, self.port = spec["host"], spec["port"]
        extra = "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", {}).items())
        self.requests = [
            f"GET {p} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode() for p in spec["paths"]
        ]
        self.n_requests = len(self.requests)
        self.concurrency: int = spec["concurrency"]
        self.duration: float = spec["duration"]
        self.rate: float | None = spec.get("rate")
        self.latencies: list[float] = []
        self.ends: list[float] = []  # when each answer arrived (for the per-second figures)
        self.send_late: list[float] = []
        self.statuses: dict[bytes, int] = {}
        self.errors = 0
        self.sent = 0
        self.queued = 0
        # Idle connections, first in first out: each is used in turn, none left idle long
        # enough for the server's keep-alive timeout.
        self.idle: deque[_Connection] = deque()
        self.conns: list[_Connection] = []
        self.finished = False
        self.reconnects = 0
        self.backlog: deque[float] = deque()
        self.start = 0.0
        self.deadline = 0.0
        self.stopping = False
        self.timer_late_max = 0.0

    def answered(self, conn: _Connection, status: bytes) -> None:
        now = _now()
        self.latencies.append(now - conn.due)
        self.ends.append(now)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        conn.due = 0.0
        if self.rate is None:
            if now < self.deadline:
                conn.send(now)
        else:
            self.free(conn)

    def free(self, conn: _Connection) -> None:
        if self.backlog:
            conn.send(self.backlog.popleft())
        else:
            self.idle.append(conn)

    def reconnect(self) -> None:
        self.reconnects += 1
        asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.errors += 1
            await asyncio.sleep(0.1)
            self.reconnect()
            return
        self.conns.append(conn)
        if self.rate is None:
            conn.send(_now())
        else:
            self.free(conn)

    def tick(self, loop: asyncio.AbstractEventLoop, i: int, due: float) -> None:
        """Send every request due by now; re-arm for the next one."""
        assert self.rate is not None
        now = _now()
        self.timer_late_max = max(self.timer_late_max, now - due)
        step, start, idle, backlog = 1.0 / self.rate, self.start, self.idle, self.backlog
        while due <= now and due < self.deadline:
            if idle and not backlog:
                idle.popleft().send(due)
                self.send_late.append(now - due)
            else:
                backlog.append(due)
                self.queued += 1
            i += 1
            due = start + i * step
        if due < self.deadline:
            # uvloop's timers have millisecond resolution: a shorter delay would spin the loop
            # (a tick per iteration, most with nothing due). So at most 1,000 ticks a second,
            # each sending what is due; the send is then up to 1 ms late (``send_late_*``),
            # and that wait counts in the latency.
            loop.call_later(max(due - _now(), TICK), self.tick, loop, i, due)
        else:
            self.stopping = True

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        conns = self.conns
        for _ in range(self.concurrency):
            _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
            conns.append(conn)
        cpu_start = time.process_time()
        self.start = _now()
        self.deadline = self.start + self.duration
        if self.rate is None:
            for conn in conns:
                conn.send(_now())
        else:
            self.idle = deque(conns)
            self.tick(loop, 0, self.start)
        await asyncio.sleep(self.duration)
        # Every request sent (or queued) before the deadline is waited for, up to 30 s more.
        limit = _now() + 30
        while (self.backlog or any(c.due for c in conns if not c.closed)) and _now() < limit:
            await asyncio.sleep(0.01)
        elapsed = max(self.ends[-1] if self.ends else _now(), self.deadline) - self.start
        cpu = time.process_time() - cpu_start
        self.finished = True
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        return self.result(elapsed, cpu)

    def result(self, elapsed: float, cpu: float) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        late = sorted(self.send_late)

        def pct(values: list[float], q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0

        # Per second of the run: answers, p99 and max (a stall is one bad second, or spread).
        per_second: dict[int, list[float]] = {}
        for end, latency in zip(self.ends, self.latencies, strict=True):
            per_second.setdefault(int(end - self.start), []).append(latency)
        seconds = []
        for second in sorted(per_second):
            values = sorted(per_second[second])
            seconds.append(
                [second, len(values), round(pct(values, 0.99), 1), round(values[-1] * 1000, 1)]
            )
        n = len(latencies)
        return {
            "requests": n,
            "rps": n / elapsed if elapsed else 0.0,
            "p50_ms": pct(latencies, 0.50),
            "p90_ms": pct(latencies, 0.90),
            "p99_ms": pct(latencies, 0.99),
            "max_ms": latencies[-1] * 1000 if latencies else 0.0,
            "over_ms": {str(t): sum(1 for x in latencies if x > t / 1000) for t in (10, 25, 50)},
            "errors": self.errors,
            "statuses": {k.decode(): v for k, v in self.statuses.items()},
            "target_rate": self.rate,
            "concurrency": self.concurrency,
            # What the load generator itself cost (it shares the cores with the server).
            "client_cpu_us_per_request": round(1e6 * cpu / n, 1) if n else 0,
            "client_cpu_share": round(cpu / elapsed, 3) if elapsed else 0.0,
            # Its own stalls (open loop): how late requests that found a free connection went.
            "send_late_p99_ms": round(pct(late, 0.99), 2),
            "send_late_max_ms": round(late[-1] * 1000, 2) if late else 0.0,
            "timer_late_max_ms": round(self.timer_late_max * 1000, 2),
            "queued": self.queued,
            "reconnects": self.reconnects,
            "unanswered": self.sent - len(latencies) - self.errors,
            "per_second": seconds,  # [second, answers, p99 ms, max ms]
        }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    if spec.get("cpu") is not None:
        os.sched_setaffinity(0, {int(spec["cpu"])})
    if spec.get("nice"):
        os.setpriority(os.PRIO_PROCESS, 0, int(spec["nice"]))
    load = _Load(spec)
    try:
        import uvloop

        result = uvloop.run(load.run())
    except ImportError:  # pragma: no cover - uvloop is an optional speed-up
        result = asyncio.run(load.run())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
