"""Live streams: cyclic garbage and CPU per stream opened and ended.

One uvicorn process serving ``bench/_sse_app.py`` (the live stream's shape, no database): the
load (this process, httpx) opens BENCH_SSE_STREAMS (500) streams, BENCH_SSE_CONCURRENCY (20) at
a time, in two ways: the client reads the first event and leaves (``client_left``, an agent
closing the tab), or the server ends the stream after its event (``server_ended``, as the agent
page's stream does after 5 minutes). The server reports, per stream, the objects its cyclic GC
collected (every collection, through ``gc.callbacks``, and a ``gc.collect()`` at the end) and
its CPU time (``time.process_time``; the load is in another process). With BENCH_SSE_IMPLS
"ours,sse-starlette" (sse-starlette installed by hand) the two alternate over BENCH_SSE_ROUNDS
(3) rounds. Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.embedded import free_port, wait_for_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STREAMS = int(os.environ.get("BENCH_SSE_STREAMS", "500"))
CONCURRENCY = int(os.environ.get("BENCH_SSE_CONCURRENCY", "20"))
ROUNDS = int(os.environ.get("BENCH_SSE_ROUNDS", "3"))
IMPLS = os.environ.get("BENCH_SSE_IMPLS", "ours").split(",")
THRESHOLD = os.environ.get("BENCH_SSE_GC_THRESHOLD", "5000")
MODES = {"client_left": "/stream/0", "server_ended": "/stream/1"}


async def one(client: httpx.AsyncClient, path: str) -> None:
    async with client.stream("GET", path) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                break  # leave (client_left), or the server ends it right after


async def streams(client: httpx.AsyncClient, path: str, count: int) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated() -> None:
        async with gate:
            await one(client, path)

    await asyncio.gather(*(gated() for _ in range(count)))


async def measure(port: int) -> dict[str, dict[str, float]]:
    """Per mode: objects the server's GC collected per stream, and its CPU µs per stream."""
    limits = httpx.Limits(max_connections=CONCURRENCY + 2)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
    ) as client:
        for path in MODES.values():  # warm up
            await streams(client, path, 50)
        await asyncio.sleep(1.0)  # the last streams' ends reach the server
        cpu = (await client.get("/gc")).json()["cpu_s"]
        found: dict[str, dict[str, float]] = {}
        for mode, path in MODES.items():
            await streams(client, path, STREAMS)
            await asyncio.sleep(1.0)
            stats = (await client.get("/gc")).json()
            found[mode] = {
                "gc_objects_per_stream": stats["collected"] / STREAMS,
                "gc_collections": stats["collections"],
                "cpu_us_per_stream": (stats["cpu_s"] - cpu) / STREAMS * 1e6,
            }
            cpu = stats["cpu_s"]
        return found


def serve(impl: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_SSE_IMPL": impl, "BENCH_SSE_GC_THRESHOLD": THRESHOLD}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench._sse_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env,
    )  # fmt: skip


def run(impl: str) -> dict[str, dict[str, float]]:
    port = free_port()
    server = serve(impl, port)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        result = asyncio.run(measure(port))
    finally:
        server.terminate()
        server.wait(30)
    return result


def main() -> None:
    rows: list[dict[str, Any]] = []
    for round_no in range(ROUNDS):
        for impl in IMPLS:
            found = run(impl)
            for mode in MODES:
                row = {"round": round_no + 1, "impl": impl, "mode": mode, **found[mode]}
                row["load"] = os.getloadavg()[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {}
    for impl in IMPLS:
        for mode in MODES:
            mine = [r for r in rows if r["impl"] == impl and r["mode"] == mode]
            summary[f"{impl}/{mode}"] = {
                key: [round(r[key], 1) for r in mine]
                for key in ("gc_objects_per_stream", "cpu_us_per_stream", "load")
            } | {"median_cpu_us": statistics.median(r["cpu_us_per_stream"] for r in mine)}
    print(json.dumps({"streams": STREAMS, "threshold": THRESHOLD, "summary": summary}))


if __name__ == "__main__":
    main()
