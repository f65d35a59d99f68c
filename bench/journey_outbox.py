"""Journey worker throughput, as it runs: the activity through the outbox (or, before it, published
before the commit). Run it on two trees (before / after a change) alternately.

Produces BENCH_OUTBOX_CUSTOMERS (20,000) simulated customers × 10 events to the normalized topic,
then starts one ``waypoint worker journey`` process and measures (a) events/s until every event
is applied (the event table's count) and (b) events/s until the activity of every one has also
left the outbox (``journey.outbox`` empty; the same as (a) on a tree without an outbox), and the
CPU seconds this took in the worker process and in PostgreSQL (every process of its cluster):
events per CPU second does not depend on what else the machine runs. Last line: JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from bench._journey_stack import (  # noqa: E402
    Stack,
    count_events,
    elapsed,
    machine,
)
from shared.db import Database  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_OUTBOX_CUSTOMERS", "20000"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its reaped children when ``children``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def cluster_cpu(postmaster: int) -> float:
    """CPU of a PostgreSQL cluster: the postmaster, its exited children, the live ones."""
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == postmaster:
                total += (int(stat[11]) + int(stat[12])) / TICK
        except (OSError, IndexError):
            continue
    return total


def postmaster_of(stack: Stack) -> int | None:
    found = list(stack.tmp.rglob("postmaster.pid"))
    return int(found[0].read_text().split()[0]) if found else None


async def outbox_rows(db: Database) -> int:
    async with db.engine.connect() as conn:
        if await conn.scalar(text("SELECT to_regclass('journey.outbox')")) is None:
            return 0  # a tree without the outbox: the activity left before the commit
        return int(await conn.scalar(text("SELECT count(*) FROM journey.outbox")) or 0)


async def main() -> dict[str, object]:
    stack = Stack()
    try:
        await stack.prepare()
        settings = stack.settings
        total = await stack.produce_backlog(CUSTOMERS)
        db = Database(settings.dsn, pool_size=1, application_name="bench-probe")
        postmaster = postmaster_of(stack)
        pg_before = cluster_cpu(postmaster) if postmaster else 0.0
        worker = stack.spawn("worker", "journey")
        started = time.perf_counter()
        applied_s = published_s = None
        while published_s is None:
            await asyncio.sleep(0.5)
            if worker.poll() is not None:
                raise RuntimeError(f"journey worker exited with {worker.returncode}")
            if applied_s is None and await count_events(db) >= total:
                applied_s = elapsed(started)
            if applied_s is not None and await outbox_rows(db) == 0:
                published_s = elapsed(started)
        worker_cpu = cpu_seconds(worker.pid)
        pg_cpu = (cluster_cpu(postmaster) - pg_before) if postmaster else 0.0
        stack.stop(worker)
        await db.dispose()
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        result: dict[str, object] = {
            "bench": "journey_outbox",
            "tree": commit,
            "events": total,
            "applied_events_per_s": round(total / applied_s),
            "published_events_per_s": round(total / published_s),
            "worker_cpu_s": round(worker_cpu, 1),
            "postgres_cpu_s": round(pg_cpu, 1),
            "events_per_worker_cpu_s": round(total / worker_cpu),
            "events_per_cpu_s": round(total / (worker_cpu + pg_cpu)),
            "machine": machine(),
        }
        print(
            f"{commit or Path.cwd()}: {total:,} events applied at {total / applied_s:,.0f}/s, "
            f"published at {total / published_s:,.0f}/s; CPU: worker {worker_cpu:.1f} s, "
            f"PostgreSQL {pg_cpu:.1f} s ({total / (worker_cpu + pg_cpu):,.0f} events per CPU s)"
        )
        return result
    finally:
        stack.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
