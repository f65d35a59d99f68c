"""Journey worker memory under a backlog: peak RSS (VmHWM) applying BENCH_MEMORY_CUSTOMERS
(10,000) customers × 10 events, produced before the worker starts (as ``bench/context.py``).

The worker runs under ``bench/_memory_worker.py``: the ordinary ``waypoint worker journey``, plus
a thread that samples the process's RSS and, with BENCH_MEMORY_TRACEMALLOC=1, keeps a
tracemalloc snapshot at each new RSS peak and prints its top allocation sites at exit (to the
worker's log, whose path is printed). Extra environment for the worker: BENCH_MEMORY_ENV, a JSON
object (e.g. ``{"MALLOC_ARENA_MAX": "2"}``). Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._journey_stack import (  # noqa: E402
    ROOT,
    Stack,
    machine,
    peak_rss_mb,
    wait_stored,
)
from shared.db import Database  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_MEMORY_CUSTOMERS", "10000"))
EXTRA_ENV: dict[str, str] = json.loads(os.environ.get("BENCH_MEMORY_ENV", "{}"))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def main() -> dict[str, Any]:
    stack = Stack()
    try:
        await stack.prepare()
        settings = stack.settings
        total = await stack.produce_backlog(CUSTOMERS)
        print(f"produced {total:,} events for {CUSTOMERS:,} customers")
        log = stack.tmp / "memory-worker.log"
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_memory_worker.py"), "worker", "journey"],
            cwd=ROOT,
            env={**stack.env(), **EXTRA_ENV},
            stdout=subprocess.DEVNULL,
            stderr=open(log, "ab"),  # noqa: SIM115
        )
        stack.children.append(worker)
        db = Database(settings.dsn, pool_size=1, application_name="bench-probe")
        started = time.perf_counter()
        await wait_stored(db, total, worker, every=1, log=log)
        wall = time.perf_counter() - started
        await db.dispose()
        peak, end_rss, cpu = peak_rss_mb(worker.pid), rss_mb(worker.pid), cpu_seconds(worker.pid)
        stack.stop(worker)  # its sampler prints what the peak was made of at exit
        text = log.read_text(errors="replace")
        print(
            text[text.find("memory peak:") :].rstrip() if "memory peak:" in text else text[-3000:]
        )
        print(
            f"journey worker: {total:,} events in {wall:.0f} s, peak RSS {peak} MB, "
            f"RSS when drained {end_rss} MB, {1e6 * cpu / total:.0f} µs CPU per event "
            f""
        )
        return {
            "bench": "journey_worker_memory",
            "customers": CUSTOMERS,
            "events": total,
            "worker_env": EXTRA_ENV,
            "worker_peak_rss_mb": peak,
            "worker_rss_drained_mb": end_rss,
            "worker_cpu_us_per_event": round(1e6 * cpu / total, 1),
            "wall_s": round(wall, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(),
        }
    finally:
        stack.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
