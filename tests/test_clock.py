"""The clocks the suite runs on agree: this process's, a worker process's and PostgreSQL's.

`make test-future` runs the whole suite with them all a year ahead (libfaketime) to prove that
no test depends on today's date; it sets ``WAYPOINT_TEST_CLOCK_SHIFT_DAYS``, and this test then
checks that the shift really reached every one of them, so a green run means something.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from shared.db import Database

SHIFT = timedelta(days=float(os.environ.get("WAYPOINT_TEST_CLOCK_SHIFT_DAYS") or 0))
CLOSE = timedelta(minutes=1)


def kernel_now() -> datetime | None:
    """The real time, read where libfaketime does not reach: boot time + uptime (Linux)."""
    try:
        stat = Path("/proc/stat").read_text().splitlines()
        booted = next(int(line.split()[1]) for line in stat if line.startswith("btime "))
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, StopIteration, ValueError):
        return None
    return datetime.fromtimestamp(booted + uptime, UTC)


async def test_python_a_worker_process_and_postgres_share_one_clock(db: Database):
    here = datetime.now(UTC)
    async with db.session() as session:
        database = await session.scalar(text("SELECT now()"))
    child = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),  # as the tests start worker processes
    )
    worker = datetime.fromtimestamp(float(child.stdout), UTC)
    assert abs(database - here) < CLOSE, f"PostgreSQL says {database}, Python {here}"
    assert abs(worker - here) < CLOSE, f"a child process says {worker}, Python {here}"
    real = kernel_now()
    if real is not None:
        shift = here - real
        assert abs(shift - SHIFT) < CLOSE, (
            f"the clock is {shift} off the real time, expected {SHIFT} "
            "(WAYPOINT_TEST_CLOCK_SHIFT_DAYS names the shift `make test-future` applies)"
        )
