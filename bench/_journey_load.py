"""A small HTTP/1.1 load generator (keep-alive, raw asyncio streams) for the journey benches.

Runs in its own process so the server under test does not share its event loop:
``python bench/_journey_load.py < spec.json`` prints one JSON line. Two modes:
- closed loop (``rate`` null): ``concurrency`` connections send back to back → max throughput;
- open loop (``rate`` req/s): requests are scheduled at a fixed rate and latency is measured
  from the scheduled time, so a stalled server shows up as latency (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def _raw(host: str, path: str, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    paths: list[str] = spec["paths"]
    requests = [_raw(host, p, spec.get("headers", {})) for p in paths]
    concurrency: int = spec["concurrency"]
    duration: float = spec["duration"]
    rate: float | None = spec.get("rate")
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    counter = 0
    start = time.perf_counter()
    deadline = start + duration
    queue: asyncio.Queue[float] = asyncio.Queue()

    async def connection() -> None:
        nonlocal errors, counter
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                if rate is None:
                    if time.perf_counter() >= deadline:
                        return
                    scheduled = time.perf_counter()
                else:
                    scheduled = await queue.get()
                    if scheduled < 0:
                        return
                raw = requests[counter % len(requests)]
                counter += 1
                try:
                    status = await _request(reader, writer, raw)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - scheduled)
        finally:
            writer.close()

    async def schedule() -> None:
        assert rate is not None
        i = 0
        while True:
            at = start + i / rate
            if at >= deadline:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(at)
            i += 1
        for _ in range(concurrency):
            queue.put_nowait(-1.0)

    cpu_start = time.process_time()
    tasks = [asyncio.create_task(connection()) for _ in range(concurrency)]
    if rate is not None:
        tasks.append(asyncio.create_task(schedule()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else 0,
        "errors": errors,
        "statuses": statuses,
        "target_rate": rate,
        "concurrency": concurrency,
        # What the load generator itself cost (it shares the cores with the server).
        "client_cpu_us_per_request": round(1e6 * cpu / len(latencies), 1) if latencies else 0,
    }


if __name__ == "__main__":
    try:
        import uvloop

        result = uvloop.run(run(json.loads(sys.stdin.read())))
    except ImportError:  # pragma: no cover - uvloop is an optional speed-up
        result = asyncio.run(run(json.loads(sys.stdin.read())))
    print(json.dumps(result))
