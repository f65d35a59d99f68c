"""Journey worker throughput, as it runs: the activity through the outbox (or, before it, published
before the commit). Run it on two trees (before / after a change) alternately.

Produces BENCH_OUTBOX_CUSTOMERS (20,000) simulated customers × 10 events to the normalized topic,
then starts one ``waypoint worker journey`` process and measures (a) events/s until every event
is applied (the event table's count) and (b) events/s until the activity of every one has also
left the outbox (``journey.outbox`` empty; the same as (a) on a tree without an outbox). Last
line: JSON.
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
    new_producer,
    produce_customers,
)
from shared.db import Database  # noqa: E402

CUSTOMERS = int(os.environ.get("BENCH_OUTBOX_CUSTOMERS", "20000"))


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
        producer = new_producer(settings)
        await producer.start()
        total = await produce_customers(producer, settings.topic_normalized, CUSTOMERS)
        await producer.stop()
        db = Database(settings.dsn, pool_size=1, application_name="bench-probe")
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
            "machine": machine(),
        }
        print(
            f"{commit}: {total:,} events applied at {total / applied_s:,.0f}/s, "
            f"activity published at {total / published_s:,.0f}/s"
        )
        return result
    finally:
        stack.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
